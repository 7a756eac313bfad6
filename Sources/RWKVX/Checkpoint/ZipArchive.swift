// Reader for the zip container of PyTorch checkpoints (torch.save since 1.6).
// Follows the PKWARE APPNOTE: the end-of-central-directory record, its zip64
// variant and locator, central directory entries with zip64 extra fields, and
// local file headers. Only STORED (uncompressed, unencrypted) entries are read,
// because torch.save never compresses; multi-disk archives are rejected.
//
// Every offset and size is checked against the file. A file whose end record
// is missing is reported as truncated; inconsistent records are corrupt.
// CRC-32 is not checked on read, because that would read every weight; the
// writer computes it and readers of small entries may check it themselves.

struct ZipEntry {
    let name: String
    let crc32: UInt32
    let size: Int
    /// Absolute file offset of the entry's first data byte.
    let dataOffset: Int
}

struct ZipArchive {
    let file: MappedFile
    let entries: [ZipEntry]
    private let indexByName: [String: Int]

    private static let endSignature = 0x0605_4b50
    private static let zip64EndSignature = 0x0606_4b50
    private static let zip64LocatorSignature = 0x0706_4b50
    private static let centralSignature = 0x0201_4b50
    private static let localSignature = 0x0403_4b50
    private static let endRecordSize = 22
    private static let maxCommentLength = 0xFFFF

    init(file: MappedFile) throws {
        self.file = file
        let path = file.path
        let bytes = file.bytes
        let size = bytes.count

        func corrupt(_ detail: String) -> CheckpointError { .corrupt(path: path, detail: detail) }

        // Find the end record: the last signature whose comment reaches exactly
        // to the end of the file.
        guard size >= Self.endRecordSize else {
            throw CheckpointError.truncated(path: path, detail: "\(size) bytes is too short for a zip end record")
        }
        var endOffset = -1
        let lowest = max(0, size - Self.endRecordSize - Self.maxCommentLength)
        for position in stride(from: size - Self.endRecordSize, through: lowest, by: -1) {
            if bytes.u32(position) == Self.endSignature,
               position + Self.endRecordSize + bytes.u16(position + 20) == size {
                endOffset = position
                break
            }
        }
        guard endOffset >= 0 else {
            throw CheckpointError.truncated(path: path, detail: "no zip end-of-central-directory record at the end of the file")
        }

        // Locate the central directory, through the zip64 records when present.
        var entryCount = bytes.u16(endOffset + 10)
        var directorySize = bytes.u32(endOffset + 12)
        var directoryOffset = bytes.u32(endOffset + 16)
        var directoryLimit = endOffset
        if bytes.u16(endOffset + 4) != 0 || bytes.u16(endOffset + 6) != 0 {
            throw CheckpointError.unsupportedFeature(path: path, detail: "a multi-disk zip archive")
        }
        if endOffset >= 20, bytes.u32(endOffset - 20) == Self.zip64LocatorSignature {
            let locator = endOffset - 20
            guard let recordOffset = Int(exactly: bytes.u64(locator + 8)), recordOffset <= locator - 56 else {
                throw corrupt("zip64 end record offset \(bytes.u64(locator + 8)) is outside the file")
            }
            guard bytes.u32(recordOffset) == Self.zip64EndSignature else {
                throw corrupt("no zip64 end record signature at offset \(recordOffset)")
            }
            guard let count = Int(exactly: bytes.u64(recordOffset + 32)),
                  let length = Int(exactly: bytes.u64(recordOffset + 40)),
                  let start = Int(exactly: bytes.u64(recordOffset + 48))
            else {
                throw corrupt("zip64 end record at offset \(recordOffset) has sizes beyond 2^63")
            }
            entryCount = count
            directorySize = length
            directoryOffset = start
            directoryLimit = recordOffset
        } else if entryCount == 0xFFFF || directorySize == 0xFFFF_FFFF || directoryOffset == 0xFFFF_FFFF {
            throw corrupt("the end record needs zip64 values but there is no zip64 locator")
        }
        guard directoryOffset <= directoryLimit, directorySize <= directoryLimit - directoryOffset else {
            throw corrupt("central directory (offset \(directoryOffset), \(directorySize) bytes) overlaps its end record at offset \(directoryLimit)")
        }
        guard entryCount <= directorySize / 46 else {
            throw corrupt("\(entryCount) entries cannot fit in a central directory of \(directorySize) bytes")
        }

        var entries: [ZipEntry] = []
        var indexByName: [String: Int] = [:]
        entries.reserveCapacity(entryCount)
        var position = directoryOffset
        let directoryEnd = directoryOffset + directorySize
        for index in 0..<entryCount {
            let entry = try Self.readCentralEntry(bytes, at: &position, end: directoryEnd, index: index, path: path)
            guard indexByName[entry.name] == nil else {
                throw corrupt("zip entry '\(entry.name)' appears twice")
            }
            indexByName[entry.name] = entries.count
            entries.append(entry)
        }
        self.entries = entries
        self.indexByName = indexByName
    }

    func entry(named name: String) -> ZipEntry? {
        indexByName[name].map { entries[$0] }
    }

    /// The stored bytes of an entry; bounds were checked when the archive opened.
    func data(of entry: ZipEntry) -> UnsafeRawBufferPointer {
        file.slice(offset: entry.dataOffset, count: entry.size)!
    }

    /// Parses one central directory entry at `position`, advances past it, and
    /// checks its local header and data range against the file.
    private static func readCentralEntry(
        _ bytes: UnsafeRawBufferPointer, at position: inout Int, end: Int, index: Int, path: String
    ) throws -> ZipEntry {
        func corrupt(_ detail: String) -> CheckpointError { .corrupt(path: path, detail: detail) }

        let start = position
        guard start + 46 <= end else {
            throw corrupt("central directory entry \(index) at offset \(start) runs past the directory end at \(end)")
        }
        guard bytes.u32(start) == centralSignature else {
            throw corrupt("central directory entry \(index) at offset \(start) has no entry signature")
        }
        let flags = bytes.u16(start + 8)
        let method = bytes.u16(start + 10)
        let crc = bytes.readLE(UInt32.self, at: start + 16)
        var compressedSize = bytes.u32(start + 20)
        var size = bytes.u32(start + 24)
        let nameLength = bytes.u16(start + 28)
        let extraLength = bytes.u16(start + 30)
        let commentLength = bytes.u16(start + 32)
        var localOffset = bytes.u32(start + 42)
        let next = start + 46 + nameLength + extraLength + commentLength
        guard next <= end else {
            throw corrupt("central directory entry \(index) at offset \(start) runs past the directory end at \(end)")
        }
        let name = String(decoding: UnsafeRawBufferPointer(rebasing: bytes[(start + 46)..<(start + 46 + nameLength)]), as: UTF8.self)

        // Zip64 extra field: 64-bit values, present only for the fields whose
        // 32-bit slot is saturated, in the order size, compressed size, offset.
        var extra = start + 46 + nameLength
        let extraEnd = extra + extraLength
        while extra + 4 <= extraEnd {
            let id = bytes.u16(extra)
            let length = bytes.u16(extra + 2)
            let body = extra + 4
            guard body + length <= extraEnd else {
                throw corrupt("extra field of zip entry '\(name)' runs past its end")
            }
            if id == 0x0001 {
                var field = body
                func next64(_ label: String) throws -> Int {
                    guard field + 8 <= body + length, let value = Int(exactly: bytes.u64(field)) else {
                        throw corrupt("zip64 extra field of '\(name)' has no valid \(label)")
                    }
                    field += 8
                    return value
                }
                if size == 0xFFFF_FFFF { size = try next64("size") }
                if compressedSize == 0xFFFF_FFFF { compressedSize = try next64("compressed size") }
                if localOffset == 0xFFFF_FFFF { localOffset = try next64("local header offset") }
            }
            extra = body + length
        }

        if flags & 0x1 != 0 {
            throw CheckpointError.unsupportedFeature(path: path, detail: "an encrypted zip entry '\(name)'")
        }
        if method != 0 {
            throw CheckpointError.unsupportedFeature(
                path: path, detail: "compression method \(method) for zip entry '\(name)' (only stored entries, method 0, are read)")
        }
        guard compressedSize == size else {
            throw corrupt("stored zip entry '\(name)' has compressed size \(compressedSize) but size \(size)")
        }

        // The local header repeats the name and may carry its own extra field
        // (torch pads it to align data), so the data starts after both.
        guard localOffset <= bytes.count - 30 else {
            throw corrupt("local header of '\(name)' at offset \(localOffset) is outside the file")
        }
        guard bytes.u32(localOffset) == localSignature else {
            throw corrupt("no local header signature for '\(name)' at offset \(localOffset)")
        }
        let dataOffset = localOffset + 30 + bytes.u16(localOffset + 26) + bytes.u16(localOffset + 28)
        guard dataOffset <= bytes.count, size <= bytes.count - dataOffset else {
            throw corrupt("data of '\(name)' (offset \(dataOffset), \(size) bytes) extends past the end of the file")
        }

        position = next
        return ZipEntry(name: name, crc32: crc, size: size, dataOffset: dataOffset)
    }
}
