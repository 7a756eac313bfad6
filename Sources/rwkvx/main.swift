// rwkvx command-line entry point.
