// Checkpoint I/O: the fixtures read the same from .pth and .safetensors, both
// writers round-trip (including strided views into a shared storage), and each
// kind of damaged file raises its documented CheckpointError.
import XCTest
@testable import RWKVX

// MARK: - Helpers

private func fixture(_ name: String) -> String {
    Bundle.module.url(forResource: "Fixtures", withExtension: nil)!.appendingPathComponent(name).path
}

private func readBytes(_ path: String) throws -> [UInt8] {
    [UInt8](try Data(contentsOf: URL(fileURLWithPath: path)))
}

private func writeBytes(_ bytes: [UInt8], _ path: String) throws {
    try Data(bytes).write(to: URL(fileURLWithPath: path))
}

/// bf16 bytes of `values`, truncating each float to its top 16 bits.
private func bf16Bytes(_ values: [Float]) -> [UInt8] {
    var bytes: [UInt8] = []
    for value in values { bytes.appendLE(UInt16(truncatingIfNeeded: value.bitPattern >> 16)) }
    return bytes
}

private func f32Bytes(_ values: [Float]) -> [UInt8] {
    var bytes: [UInt8] = []
    for value in values { bytes.appendLE(value.bitPattern) }
    return bytes
}

private func f16Bytes(_ values: [Float]) -> [UInt8] {
    var bytes: [UInt8] = []
    for value in values { bytes.appendLE(Float16(value).bitPattern) }
    return bytes
}

/// Values with no two neighbours equal, all exact in bf16.
private func ramp(_ count: Int, start: Float = 1) -> [Float] {
    (0..<count).map { start + Float($0) * 0.5 * (($0 % 2 == 0) ? 1 : -1) }
}

private func assertCheckpointError(
    _ body: @autoclosure () throws -> Any, _ message: String,
    file: StaticString = #filePath, line: UInt = #line,
    _ check: (CheckpointError) -> Bool
) {
    do {
        _ = try body()
        XCTFail("no error: \(message)", file: file, line: line)
    } catch let error as CheckpointError {
        XCTAssertTrue(check(error), "\(message): unexpected \(error)", file: file, line: line)
    } catch {
        XCTFail("\(message): not a CheckpointError: \(error)", file: file, line: line)
    }
}

private func replace(_ bytes: [UInt8], _ old: String, _ new: String) -> [UInt8] {
    let oldBytes = Array(old.utf8)
    for start in 0...(bytes.count - oldBytes.count) where Array(bytes[start..<(start + oldBytes.count)]) == oldBytes {
        return Array(bytes[..<start]) + Array(new.utf8) + Array(bytes[(start + oldBytes.count)...])
    }
    XCTFail("\(old) not found")
    return bytes
}

class CheckpointTestCase: XCTestCase {
    var directory = ""

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "rwkvx-checkpoint-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    func temporary(_ name: String) -> String { "\(directory)/\(name)" }

    /// Writes a torch-layout archive with a hand-made data.pkl and storages
    /// `data/0`, `data/1`, ...
    func writeArchive(_ path: String, pickle: [UInt8], storages: [[UInt8]]) throws {
        let output = try AtomicOutputFile(path: path)
        var zip = ZipWriter(output: output)
        try pickle.withUnsafeBytes { try zip.addEntry(name: "archive/data.pkl", data: $0) }
        try Array("little".utf8).withUnsafeBytes { try zip.addEntry(name: "archive/byteorder", data: $0) }
        for (key, storage) in storages.enumerated() {
            try storage.withUnsafeBytes { try zip.addEntry(name: "archive/data/\(key)", data: $0) }
        }
        try zip.finish()
        try output.commit()
    }

    /// Encodes the data.pkl that PthWriter would write for `views`, before any checks.
    func pickleBytes(views: [PthWriter.View], storages: [PthWriter.Storage]) -> [UInt8] {
        var keys: [Int: Int] = [:]
        for view in views where keys[view.storage] == nil { keys[view.storage] = keys.count }
        var pickle = StateDictPickle()
        return pickle.encode(views: views, storages: storages, keys: keys)
    }
}

// MARK: - Hashes

final class CheckpointHashTests: XCTestCase {
    func testSHA256KnownVectors() {
        XCTAssertEqual(SHA256.hexDigest(Array("".utf8)), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
        XCTAssertEqual(SHA256.hexDigest(Array("abc".utf8)), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
        XCTAssertEqual(
            SHA256.hexDigest(Array("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq".utf8)),
            "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1")
        XCTAssertEqual(
            SHA256.hexDigest([UInt8](repeating: UInt8(ascii: "a"), count: 1000)),
            "41edece42d63e8d9bf515a9ba6932e1c20cbc9f5a5d134645adb5db1b9737ea3")
    }

    func testCRC32KnownVector() {
        let crc = Array("123456789".utf8).withUnsafeBytes { CRC32.checksum($0) }
        XCTAssertEqual(crc, 0xCBF4_3926)
    }
}

// MARK: - Reading the fixtures

final class CheckpointReadTests: CheckpointTestCase {
    func testPthAndSafetensorsAgree() throws {
        let pth = try Checkpoint.open(path: fixture("rwkvx-tiny/rwkvx-tiny.pth"))
        let safetensors = try Checkpoint.open(path: fixture("rwkvx-tiny/rwkvx-tiny.safetensors"))
        XCTAssertEqual(pth.format, .pytorch)
        XCTAssertEqual(safetensors.format, .safetensors)
        XCTAssertEqual(pth.tensorNames.count, 157)
        XCTAssertEqual(pth.tensorNames, safetensors.tensorNames)
        for name in pth.tensorNames {
            let a = try pth.tensor(name)
            let b = try safetensors.tensor(name)
            XCTAssertEqual(a.shape, b.shape, name)
            XCTAssertEqual(a.dtype, b.dtype, name)
            XCTAssertEqual(a.strides, b.strides, name)
            XCTAssertEqual(a.toFloat32(), b.toFloat32(), name)
        }
    }

    func testFixtureValuesAreNotDegenerate() throws {
        let checkpoint = try Checkpoint.open(path: fixture("rwkvx-tiny/rwkvx-tiny.pth"))
        let embedding = try checkpoint.tensor("rwkv.emb.weight")
        XCTAssertEqual(embedding.dtype, .bfloat16)
        XCTAssertEqual(embedding.shape, [256, 128])
        let values = embedding.toFloat32()
        XCTAssertGreaterThan(Set(values).count, 100)
        XCTAssertTrue(values.allSatisfy { $0.isFinite })
    }

    func testMetadata() throws {
        let pth = try Checkpoint.open(path: fixture("rwkvx-tiny/rwkvx-tiny.pth"))
        XCTAssertEqual(pth.metadata["byteorder"], "little")
        XCTAssertEqual(pth.metadata["version"], "3")
        let safetensors = try Checkpoint.open(path: fixture("rwkvx-tiny/rwkvx-tiny.safetensors"))
        XCTAssertEqual(safetensors.metadata["layout"], "rwkv-x")
        XCTAssertEqual(safetensors.metadata["n_embd"], "128")
    }

    func testPlainRWKV7Names() throws {
        let checkpoint = try Checkpoint.open(path: fixture("rwkv7-tiny/rwkv7-tiny.pth"))
        XCTAssertTrue(checkpoint.contains("emb.weight"))
        XCTAssertTrue(checkpoint.contains("blocks.0.att.key.weight"))
        XCTAssertFalse(checkpoint.tensorNames.contains { $0.hasPrefix("rwkv.") })
        XCTAssertEqual(checkpoint.fileSize, 1_063_669)
    }

    func testFingerprint() throws {
        let first = try Checkpoint.open(path: fixture("rwkvx-tiny/rwkvx-tiny.pth"))
        let again = try Checkpoint.open(path: fixture("rwkvx-tiny/rwkvx-tiny.pth"))
        let other = try Checkpoint.open(path: fixture("rwkv7-tiny/rwkv7-tiny.pth"))
        let safetensors = try Checkpoint.open(path: fixture("rwkvx-tiny/rwkvx-tiny.safetensors"))
        XCTAssertEqual(first.fingerprint.count, 64)
        XCTAssertTrue(first.fingerprint.allSatisfy { "0123456789abcdef".contains($0) })
        XCTAssertEqual(first.fingerprint, again.fingerprint)
        XCTAssertNotEqual(first.fingerprint, other.fingerprint)
        XCTAssertNotEqual(first.fingerprint, safetensors.fingerprint)
    }

    func testMissingTensor() throws {
        let checkpoint = try Checkpoint.open(path: fixture("rwkv7-tiny/rwkv7-tiny.pth"))
        assertCheckpointError(try checkpoint.tensor("blocks.99.att.key.weight"), "missing tensor") {
            $0 == .missingTensor(path: checkpoint.path, tensor: "blocks.99.att.key.weight")
        }
        XCTAssertTrue(CheckpointError.missingTensor(path: "m.pth", tensor: "x.weight").description.contains("x.weight"))
    }
}

// MARK: - Writers

final class CheckpointWriteTests: CheckpointTestCase {
    private func sampleTensors() -> [TensorPayload] {
        [
            TensorPayload(name: "emb.weight", dtype: .bfloat16, shape: [8, 4], data: bf16Bytes(ramp(32))),
            TensorPayload(name: "blocks.0.att.x_r", dtype: .float32, shape: [1, 1, 4], data: f32Bytes(ramp(4, start: -2))),
            TensorPayload(name: "blocks.0.ln1.weight", dtype: .float16, shape: [4], data: f16Bytes(ramp(4, start: 3))),
            TensorPayload(name: "rank4", dtype: .bfloat16, shape: [2, 1, 3, 2], data: bf16Bytes(ramp(12, start: 7))),
            TensorPayload(name: "scalar", dtype: .float32, shape: [], data: f32Bytes([42])),
            TensorPayload(name: "empty", dtype: .float32, shape: [0, 3], data: []),
            TensorPayload(name: "filled", dtype: .float32, shape: [300], fill: { buffer in
                let floats = buffer.bindMemory(to: Float.self)
                for index in floats.indices { floats[index] = Float(index) - 150 }
            }),
        ]
    }

    private func assertMatches(_ checkpoint: Checkpoint, _ tensors: [TensorPayload], file: StaticString = #filePath, line: UInt = #line) throws {
        XCTAssertEqual(checkpoint.tensorNames, tensors.map(\.name).sorted(), file: file, line: line)
        for payload in tensors {
            let view = try checkpoint.tensor(payload.name)
            XCTAssertEqual(view.dtype, payload.dtype, payload.name, file: file, line: line)
            XCTAssertEqual(view.shape, payload.shape, payload.name, file: file, line: line)
            XCTAssertTrue(view.isContiguous, payload.name, file: file, line: line)
            let expected = try payload.withBytes(byteCount: payload.expectedByteCount!) { Array($0) }
            let actual = Array(UnsafeRawBufferPointer(start: view.base, count: expected.count))
            XCTAssertEqual(actual, expected, payload.name, file: file, line: line)
        }
    }

    func testPthRoundTrip() throws {
        let path = temporary("model.pth")
        let tensors = sampleTensors()
        try PthWriter.write(tensors: tensors, to: path)
        let checkpoint = try Checkpoint.open(path: path)
        XCTAssertEqual(checkpoint.format, .pytorch)
        XCTAssertEqual(checkpoint.metadata["byteorder"], "little")
        try assertMatches(checkpoint, tensors)
        XCTAssertEqual(try checkpoint.tensor("filled").toFloat32()[0], -150)
        let leftovers = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.contains(".tmp-") }
        XCTAssertEqual(leftovers, [])
    }

    func testPthDataIsAlignedTo64() throws {
        let path = temporary("aligned.pth")
        try PthWriter.write(tensors: sampleTensors(), to: path)
        let checkpoint = try Checkpoint.open(path: path)
        // The mapping starts on a page boundary, so file offsets keep their alignment.
        for name in checkpoint.tensorNames {
            let view = try checkpoint.tensor(name)
            XCTAssertEqual(Int(bitPattern: view.base) % 64, 0, name)
        }
    }

    func testPthZip64RoundTrip() throws {
        let path = temporary("zip64.pth")
        let tensors = sampleTensors()
        var storages: [PthWriter.Storage] = []
        var views: [PthWriter.View] = []
        for payload in tensors {
            let bytes = try payload.withBytes(byteCount: payload.expectedByteCount!) { Array($0) }
            views.append(PthWriter.View(name: payload.name, storage: storages.count, shape: payload.shape))
            storages.append(PthWriter.Storage(dtype: payload.dtype, data: bytes))
        }
        try PthWriter.write(storages: storages, views: views, to: path, forceZip64: true)
        try assertMatches(try Checkpoint.open(path: path), tensors)
    }

    func testSafetensorsRoundTrip() throws {
        let path = temporary("model.safetensors")
        let tensors = sampleTensors()
        try SafetensorsWriter.write(tensors: tensors, metadata: ["format": "pt", "quote\"key": "line\nbreak"], to: path)
        let checkpoint = try Checkpoint.open(path: path)
        XCTAssertEqual(checkpoint.format, .safetensors)
        XCTAssertEqual(checkpoint.metadata, ["format": "pt", "quote\"key": "line\nbreak"])
        try assertMatches(checkpoint, tensors)

        let bytes = try readBytes(path)
        let headerLength = bytes.withUnsafeBytes { $0.u64(0) }
        XCTAssertEqual((8 + headerLength) % 8, 0)
    }

    func testSharedStorageViews() throws {
        // One 4x6 fp32 storage and three views of it: itself, its transpose,
        // and every other column of rows 1-2.
        let values = ramp(24)
        let storages = [PthWriter.Storage(dtype: .float32, data: f32Bytes(values))]
        let views = [
            PthWriter.View(name: "full", storage: 0, shape: [4, 6]),
            PthWriter.View(name: "transposed", storage: 0, shape: [6, 4], strides: [1, 6]),
            PthWriter.View(name: "slice", storage: 0, storageOffset: 6, shape: [2, 3], strides: [6, 2]),
        ]
        let path = temporary("shared.pth")
        try PthWriter.write(storages: storages, views: views, to: path)
        let checkpoint = try Checkpoint.open(path: path)

        XCTAssertEqual(try checkpoint.tensor("full").toFloat32(), values)
        let transposed = try checkpoint.tensor("transposed")
        XCTAssertFalse(transposed.isContiguous)
        XCTAssertEqual(transposed.strides, [1, 6])
        XCTAssertEqual(transposed.toFloat32(), (0..<6).flatMap { column in (0..<4).map { values[$0 * 6 + column] } })
        XCTAssertEqual(try checkpoint.tensor("slice").toFloat32(), [values[6], values[8], values[10], values[12], values[14], values[16]])
        for name in ["full", "transposed", "slice"] {
            XCTAssertEqual(try checkpoint.storageByteCount(of: name), 96, name)
        }

        // The same tensors copied out densely survive a safetensors round trip.
        let copies = try checkpoint.tensorNames.map { TensorPayload(copying: try checkpoint.tensor($0)) }
        let converted = temporary("shared.safetensors")
        try SafetensorsWriter.write(tensors: copies, to: converted)
        let reread = try Checkpoint.open(path: converted)
        for name in checkpoint.tensorNames {
            XCTAssertEqual(try reread.tensor(name).toFloat32(), try checkpoint.tensor(name).toFloat32(), name)
            XCTAssertEqual(try reread.tensor(name).shape, try checkpoint.tensor(name).shape, name)
        }
    }

    func testFixtureRewriteRoundTrips() throws {
        let original = try Checkpoint.open(path: fixture("rwkv7-tiny/rwkv7-tiny.pth"))
        let payloads = try original.tensorNames.map { TensorPayload(copying: try original.tensor($0)) }
        let pthPath = temporary("rewritten.pth")
        let safetensorsPath = temporary("rewritten.safetensors")
        try PthWriter.write(tensors: payloads, to: pthPath)
        try SafetensorsWriter.write(tensors: payloads, metadata: ["format": "pt"], to: safetensorsPath)
        for copy in [try Checkpoint.open(path: pthPath), try Checkpoint.open(path: safetensorsPath)] {
            XCTAssertEqual(copy.tensorNames, original.tensorNames)
            for name in original.tensorNames {
                let a = try original.tensor(name)
                let b = try copy.tensor(name)
                XCTAssertEqual(a.shape, b.shape, name)
                XCTAssertEqual(a.toFloat32(), b.toFloat32(), name)
            }
        }
    }

    func testWriterRejectsBadInput() throws {
        let path = temporary("bad.pth")
        let short = TensorPayload(name: "short", dtype: .float32, shape: [4], data: [0, 0, 0])
        assertCheckpointError(try PthWriter.write(tensors: [short], to: path), "byte count") {
            if case .invalidTensor(path, "short", _) = $0 { return true } else { return false }
        }
        assertCheckpointError(try SafetensorsWriter.write(tensors: [short], to: path), "byte count") {
            if case .invalidTensor(path, "short", _) = $0 { return true } else { return false }
        }
        let storage = PthWriter.Storage(dtype: .float32, data: f32Bytes(ramp(6)))
        let outside = PthWriter.View(name: "outside", storage: 0, storageOffset: 4, shape: [3])
        assertCheckpointError(try PthWriter.write(storages: [storage], views: [outside], to: path), "view bounds") {
            if case .outOfBounds(path, "outside", _) = $0 { return true } else { return false }
        }
        XCTAssertFalse(FileManager.default.fileExists(atPath: path))
    }
}

// MARK: - Damaged and foreign files

final class CheckpointErrorTests: CheckpointTestCase {
    func testMissingFile() {
        let path = temporary("does-not-exist.pth")
        assertCheckpointError(try Checkpoint.open(path: path), "missing file") { $0 == .fileNotFound(path: path) }
    }

    func testNonCheckpointFiles() throws {
        let text = temporary("notes.pth")
        try writeBytes(Array("hello, this is not a checkpoint\n".utf8), text)
        assertCheckpointError(try Checkpoint.open(path: text), "text file") { $0 == .unknownFormat(path: text) }

        let empty = temporary("empty.safetensors")
        try writeBytes([], empty)
        assertCheckpointError(try Checkpoint.open(path: empty), "empty file") { $0 == .unknownFormat(path: empty) }

        assertCheckpointError(try Checkpoint.open(path: directory), "directory") {
            $0 == .notRegularFile(path: self.directory)
        }
    }

    func testTruncatedZip() throws {
        let original = try readBytes(fixture("rwkv7-tiny/rwkv7-tiny.pth"))
        // Inside the first header, inside tensor data, inside the central
        // directory, inside the zip64 records, and one byte short.
        for length in [10, 100, original.count / 2, original.count - 1_000, original.count - 30, original.count - 1] {
            let path = temporary("cut-\(length).pth")
            try writeBytes(Array(original[..<length]), path)
            assertCheckpointError(try Checkpoint.open(path: path), "cut at \(length)") {
                if case .truncated(path, _) = $0 { return true } else { return false }
            }
        }
    }

    func testCorruptCentralDirectory() throws {
        let original = try readBytes(fixture("rwkv7-tiny/rwkv7-tiny.pth"))
        let endOffset = original.count - 22
        let directoryOffset = original.withUnsafeBytes { $0.u64(endOffset - 20 - 56 + 48) }

        // Damage the first directory entry's signature.
        var damaged = original
        damaged[Int(directoryOffset)] ^= 0xFF
        let path = temporary("bad-directory.pth")
        try writeBytes(damaged, path)
        assertCheckpointError(try Checkpoint.open(path: path), "entry signature") {
            if case .corrupt(path, let detail) = $0 { return detail.contains("central directory entry 0") } else { return false }
        }

        // Point the zip64 end record's directory offset past the end record.
        var moved = original
        let field = endOffset - 20 - 56 + 48
        moved.replaceSubrange(field..<(field + 8), with: withUnsafeBytes(of: UInt64(original.count).littleEndian, Array.init))
        let movedPath = temporary("moved-directory.pth")
        try writeBytes(moved, movedPath)
        assertCheckpointError(try Checkpoint.open(path: movedPath), "directory offset") {
            if case .corrupt(movedPath, _) = $0 { return true } else { return false }
        }

        // A local header offset outside the file.
        var local = original
        let offsetField = Int(directoryOffset) + 42
        local.replaceSubrange(offsetField..<(offsetField + 4), with: [0xF0, 0xFF, 0xFF, 0x7F])
        let localPath = temporary("bad-local.pth")
        try writeBytes(local, localPath)
        assertCheckpointError(try Checkpoint.open(path: localPath), "local header offset") {
            if case .corrupt(localPath, _) = $0 { return true } else { return false }
        }
    }

    func testCompressedEntryIsRejected() throws {
        var bytes = try readBytes(fixture("rwkv7-tiny/rwkv7-tiny.pth"))
        let directoryOffset = Int(bytes.withUnsafeBytes { $0.u64(bytes.count - 22 - 20 - 56 + 48) })
        bytes[directoryOffset + 10] = 8  // deflate
        let path = temporary("deflated.pth")
        try writeBytes(bytes, path)
        assertCheckpointError(try Checkpoint.open(path: path), "deflate") {
            if case .unsupportedFeature(path, let detail) = $0 { return detail.contains("compression method 8") } else { return false }
        }
    }

    func testCorruptPickleCRC() throws {
        var bytes = try readBytes(fixture("rwkv7-tiny/rwkv7-tiny.pth"))
        bytes[70] ^= 0x01  // inside data.pkl, whose data starts at offset 64
        let path = temporary("bad-crc.pth")
        try writeBytes(bytes, path)
        assertCheckpointError(try Checkpoint.open(path: path), "pickle CRC") {
            if case .corrupt(path, let detail) = $0 { return detail.contains("CRC-32") } else { return false }
        }
    }

    func testUnknownPickleOpcode() throws {
        let path = temporary("opcode.pth")
        try writeArchive(path, pickle: [0x80, 0x02, 0x7D, 0xFF, 0x2E], storages: [])
        assertCheckpointError(try Checkpoint.open(path: path), "opcode 0xff") {
            if case .unsupportedPickle(path, let detail) = $0 {
                return detail.contains("opcode 0xff") && detail.contains("offset 3")
            }
            return false
        }
    }

    func testDisallowedGlobal() throws {
        let path = temporary("global.pth")
        var pickle: [UInt8] = [0x80, 0x02, 0x63] + Array("os\nsystem\n".utf8)
        pickle += [0x58, 2, 0, 0, 0] + Array("ls".utf8) + [0x85, 0x52, 0x2E]
        try writeArchive(path, pickle: pickle, storages: [])
        assertCheckpointError(try Checkpoint.open(path: path), "os system") {
            if case .unsupportedPickle(path, let detail) = $0 {
                return detail.contains("'os system'") && detail.contains("offset 2")
            }
            return false
        }
        let error = CheckpointError.unsupportedPickle(path: path, detail: "global 'os system' at offset 2")
        XCTAssertTrue(error.description.contains(path))
    }

    func testViewOutsideStorage() throws {
        let storage = PthWriter.Storage(dtype: .bfloat16, data: bf16Bytes(ramp(16)))
        let view = PthWriter.View(name: "blocks.0.att.key.weight", storage: 0, storageOffset: 8, shape: [3, 3])
        let path = temporary("outside.pth")
        try writeArchive(path, pickle: pickleBytes(views: [view], storages: [storage]), storages: [bf16Bytes(ramp(16))])
        assertCheckpointError(try Checkpoint.open(path: path), "view past storage") {
            if case .outOfBounds(path, "blocks.0.att.key.weight", _) = $0 { return true } else { return false }
        }
        let message = CheckpointError.outOfBounds(path: path, tensor: "blocks.0.att.key.weight", detail: "").description
        XCTAssertTrue(message.contains(path), message)
        XCTAssertTrue(message.contains("blocks.0.att.key.weight"), message)
    }

    func testUnsupportedDTypeInPth() throws {
        let storage = PthWriter.Storage(dtype: .bfloat16, data: bf16Bytes(ramp(4)))
        let view = PthWriter.View(name: "step_count", storage: 0, shape: [2])
        let pickle = replace(pickleBytes(views: [view], storages: [storage]), "BFloat16Storage\n", "LongStorage\n")
        let path = temporary("int64.pth")
        try writeArchive(path, pickle: pickle, storages: [bf16Bytes(ramp(8))])
        assertCheckpointError(try Checkpoint.open(path: path), "int64 storage") {
            $0 == .unsupportedDType(path: path, tensor: "step_count", dtype: "int64")
        }
    }

    func testSafetensorsBadHeaderLength() throws {
        let original = try readBytes(fixture("rwkvx-tiny/rwkvx-tiny.safetensors"))

        var huge = original
        huge.replaceSubrange(0..<8, with: withUnsafeBytes(of: UInt64(1 << 40).littleEndian, Array.init))
        let hugePath = temporary("huge-header.safetensors")
        try writeBytes(huge, hugePath)
        assertCheckpointError(try Checkpoint.open(path: hugePath), "header over the limit") {
            if case .corrupt(hugePath, _) = $0 { return true } else { return false }
        }

        var long = original
        long.replaceSubrange(0..<8, with: withUnsafeBytes(of: UInt64(original.count).littleEndian, Array.init))
        let longPath = temporary("long-header.safetensors")
        try writeBytes(long, longPath)
        assertCheckpointError(try Checkpoint.open(path: longPath), "header past the end") {
            if case .truncated(longPath, _) = $0 { return true } else { return false }
        }

        let cutPath = temporary("cut.safetensors")
        try writeBytes(Array(original[..<(original.count - 100)]), cutPath)
        assertCheckpointError(try Checkpoint.open(path: cutPath), "cut data section") {
            if case .truncated(cutPath, let detail) = $0 { return detail.contains("ends at byte") } else { return false }
        }
    }

    /// Writes a safetensors file with a hand-made header and `dataSize` zero bytes of data.
    private func writeSafetensors(_ name: String, header: String, dataSize: Int) throws -> String {
        var headerBytes = Array(header.utf8)
        while (8 + headerBytes.count) % 8 != 0 { headerBytes.append(0x20) }
        var bytes: [UInt8] = []
        bytes.appendLE(UInt64(headerBytes.count))
        bytes += headerBytes + [UInt8](repeating: 0, count: dataSize)
        let path = temporary(name)
        try writeBytes(bytes, path)
        return path
    }

    func testSafetensorsBadOffsets() throws {
        let outside = try writeSafetensors("outside.safetensors", header: #"{"w":{"dtype":"F32","shape":[4],"data_offsets":[1000,1016]}}"#, dataSize: 16)
        assertCheckpointError(try Checkpoint.open(path: outside), "offsets past the data") {
            if case .truncated(outside, let detail) = $0 { return detail.contains("tensor w") } else { return false }
        }

        let mismatch = try writeSafetensors("mismatch.safetensors", header: #"{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,12]}}"#, dataSize: 16)
        assertCheckpointError(try Checkpoint.open(path: mismatch), "range shorter than shape") {
            if case .corrupt(mismatch, let detail) = $0 { return detail.contains("tensor w") } else { return false }
        }

        let reversed = try writeSafetensors("reversed.safetensors", header: #"{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,4]}}"#, dataSize: 16)
        assertCheckpointError(try Checkpoint.open(path: reversed), "end before begin") {
            if case .corrupt(reversed, _) = $0 { return true } else { return false }
        }

        let overlap = try writeSafetensors(
            "overlap.safetensors",
            header: #"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#,
            dataSize: 16)
        assertCheckpointError(try Checkpoint.open(path: overlap), "overlap") {
            if case .corrupt(overlap, let detail) = $0 { return detail.contains("overlap") } else { return false }
        }

        let negative = try writeSafetensors("negative.safetensors", header: #"{"w":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, dataSize: 16)
        assertCheckpointError(try Checkpoint.open(path: negative), "negative shape") {
            if case .corrupt(negative, _) = $0 { return true } else { return false }
        }

        let notJSON = try writeSafetensors("not-json.safetensors", header: "{not json", dataSize: 0)
        assertCheckpointError(try Checkpoint.open(path: notJSON), "not JSON") {
            if case .corrupt(notJSON, _) = $0 { return true } else { return false }
        }
    }

    func testSafetensorsUnsupportedDType() throws {
        let path = try writeSafetensors("i64.safetensors", header: #"{"tokens":{"dtype":"I64","shape":[2],"data_offsets":[0,16]}}"#, dataSize: 16)
        assertCheckpointError(try Checkpoint.open(path: path), "I64") {
            $0 == .unsupportedDType(path: path, tensor: "tokens", dtype: "I64")
        }
        let message = CheckpointError.unsupportedDType(path: path, tensor: "tokens", dtype: "I64").description
        XCTAssertTrue(message.contains(path), message)
        XCTAssertTrue(message.contains("tokens"), message)
    }
}
