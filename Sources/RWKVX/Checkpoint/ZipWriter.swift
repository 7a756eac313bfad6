// Writes a zip archive of STORED entries the way PyTorch's serializer does.
// Each entry's data is aligned to 64 bytes by padding its local header with an
// extra field (id "FB", filled with 'Z'). The archive always ends with a zip64
// end record and locator before the classic end record. Values that do
// not fit 32 bits go into zip64 extra fields, as the PKWARE APPNOTE specifies.
// Unlike torch, local headers carry the CRC and sizes (no data descriptors),
// since every entry's bytes are known before it is written.

struct ZipWriter {
    static let dataAlignment = 64

    private struct CentralRecord {
        let name: [UInt8]
        let crc32: UInt32
        let size: Int
        let localOffset: Int
    }

    let output: AtomicOutputFile
    /// Writes zip64 extra fields for every entry, as a large archive would;
    /// lets tests cover the zip64 read path with small files.
    var forceZip64 = false
    private var records: [CentralRecord] = []

    init(output: AtomicOutputFile) {
        self.output = output
    }

    mutating func addEntry(name: String, data: UnsafeRawBufferPointer) throws {
        let nameBytes = Array(name.utf8)
        let localOffset = output.offset
        let size = data.count
        let crc = CRC32.checksum(data)
        let zip64 = forceZip64 || size >= 0xFFFF_FFFF

        var header: [UInt8] = []
        header.appendLE(UInt32(0x0403_4b50))
        header.appendLE(UInt16(zip64 ? 45 : 20))  // version needed to extract
        header.appendLE(UInt16(0))  // flags
        header.appendLE(UInt16(0))  // method: stored
        header.appendLE(UInt16(0))  // modification time
        header.appendLE(UInt16(0))  // modification date
        header.appendLE(crc)
        header.appendLE(zip64 ? UInt32.max : UInt32(size))  // compressed size
        header.appendLE(zip64 ? UInt32.max : UInt32(size))
        header.appendLE(UInt16(nameBytes.count))
        var extra: [UInt8] = []
        if zip64 {
            // A local zip64 field contains both sizes, even when only one is large.
            extra.appendLE(UInt16(0x0001))
            extra.appendLE(UInt16(16))
            extra.appendLE(UInt64(size))
            extra.appendLE(UInt64(size))
        }
        let unpadded = localOffset + 30 + nameBytes.count + extra.count + 4
        let padding = (Self.dataAlignment - unpadded % Self.dataAlignment) % Self.dataAlignment
        extra.appendLE(UInt16(0x4246))  // "FB"
        extra.appendLE(UInt16(padding))
        extra.append(contentsOf: repeatElement(UInt8(ascii: "Z"), count: padding))
        header.appendLE(UInt16(extra.count))
        header.append(contentsOf: nameBytes)
        header.append(contentsOf: extra)

        try output.write(header)
        try output.write(data)
        records.append(CentralRecord(name: nameBytes, crc32: crc, size: size, localOffset: localOffset))
    }

    /// Writes the central directory and the end records.
    func finish() throws {
        let directoryOffset = output.offset
        var directory: [UInt8] = []
        for record in records {
            let bigSize = forceZip64 || record.size >= 0xFFFF_FFFF
            let bigOffset = forceZip64 || record.localOffset >= 0xFFFF_FFFF
            var extra: [UInt8] = []
            if bigSize || bigOffset {
                extra.appendLE(UInt16(0x0001))
                extra.appendLE(UInt16((bigSize ? 16 : 0) + (bigOffset ? 8 : 0)))
                if bigSize {
                    extra.appendLE(UInt64(record.size))
                    extra.appendLE(UInt64(record.size))
                }
                if bigOffset { extra.appendLE(UInt64(record.localOffset)) }
            }
            directory.appendLE(UInt32(0x0201_4b50))
            directory.appendLE(UInt16(45))  // version made by
            directory.appendLE(UInt16(extra.isEmpty ? 20 : 45))
            directory.appendLE(UInt16(0))  // flags
            directory.appendLE(UInt16(0))  // method: stored
            directory.appendLE(UInt16(0))  // modification time
            directory.appendLE(UInt16(0))  // modification date
            directory.appendLE(record.crc32)
            directory.appendLE(bigSize ? UInt32.max : UInt32(record.size))
            directory.appendLE(bigSize ? UInt32.max : UInt32(record.size))
            directory.appendLE(UInt16(record.name.count))
            directory.appendLE(UInt16(extra.count))
            directory.appendLE(UInt16(0))  // comment length
            directory.appendLE(UInt16(0))  // disk number
            directory.appendLE(UInt16(0))  // internal attributes
            directory.appendLE(UInt32(0))  // external attributes
            directory.appendLE(bigOffset ? UInt32.max : UInt32(record.localOffset))
            directory.append(contentsOf: record.name)
            directory.append(contentsOf: extra)
        }
        try output.write(directory)

        let zip64EndOffset = output.offset
        let count = records.count
        var end: [UInt8] = []
        end.appendLE(UInt32(0x0606_4b50))
        end.appendLE(UInt64(44))  // size of the rest of this record
        end.appendLE(UInt16(45))  // version made by
        end.appendLE(UInt16(45))  // version needed
        end.appendLE(UInt32(0))  // this disk
        end.appendLE(UInt32(0))  // disk with the directory
        end.appendLE(UInt64(count))
        end.appendLE(UInt64(count))
        end.appendLE(UInt64(directory.count))
        end.appendLE(UInt64(directoryOffset))

        end.appendLE(UInt32(0x0706_4b50))  // zip64 locator
        end.appendLE(UInt32(0))
        end.appendLE(UInt64(zip64EndOffset))
        end.appendLE(UInt32(1))  // total disks

        end.appendLE(UInt32(0x0605_4b50))
        end.appendLE(UInt16(0))
        end.appendLE(UInt16(0))
        end.appendLE(UInt16(min(count, 0xFFFF)))
        end.appendLE(UInt16(min(count, 0xFFFF)))
        end.appendLE(UInt32(min(directory.count, 0xFFFF_FFFF)))
        end.appendLE(UInt32(min(directoryOffset, 0xFFFF_FFFF)))
        end.appendLE(UInt16(0))  // comment length
        try output.write(end)
    }
}
