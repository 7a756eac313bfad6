// Unaligned little-endian integer reads from raw bytes. Callers check bounds
// first; the reads themselves only assert them.
extension UnsafeRawBufferPointer {
    func readLE<T: FixedWidthInteger>(_ type: T.Type, at offset: Int) -> T {
        precondition(offset >= 0 && offset + MemoryLayout<T>.size <= count, "read outside the buffer")
        return T(littleEndian: loadUnaligned(fromByteOffset: offset, as: T.self))
    }

    func u16(_ offset: Int) -> Int { Int(readLE(UInt16.self, at: offset)) }
    func u32(_ offset: Int) -> Int { Int(readLE(UInt32.self, at: offset)) }
    func u64(_ offset: Int) -> UInt64 { readLE(UInt64.self, at: offset) }
}

extension Array where Element == UInt8 {
    mutating func appendLE<T: FixedWidthInteger>(_ value: T) {
        Swift.withUnsafeBytes(of: value.littleEndian) { append(contentsOf: $0) }
    }
}
