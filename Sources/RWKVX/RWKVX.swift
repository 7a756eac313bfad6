// rwkvx engine library.
