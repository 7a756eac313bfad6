// An opened checkpoint: a memory-mapped .pth (PyTorch zip) or .safetensors file
// and the index of its tensors. Opening reads only the index (the pickle or the
// JSON header, and the zip directory), and `tensor(_:)` returns a view into the
// mapping, so weights are paged in only when a kernel reads them.
#if canImport(Glibc)
import Glibc
#endif

public enum CheckpointFormat: String, Sendable {
    case pytorch
    case safetensors
}

public final class Checkpoint: @unchecked Sendable {
    public let path: String
    public let format: CheckpointFormat
    /// Names of every tensor, sorted.
    public let tensorNames: [String]
    /// The safetensors `__metadata__` map; for .pth, the archive's text records
    /// (`byteorder`, `version`, `.format_version`, ...).
    public let metadata: [String: String]
    /// Hex SHA-256 of the tensor index (names, dtypes, shapes, strides, storage
    /// sizes) and the file size. It identifies a checkpoint without reading its
    /// weights, so it is cheap enough to compare between machines.
    public let fingerprint: String

    private let file: MappedFile
    private let index: [String: IndexedTensor]

    public var fileSize: Int { file.size }

    private init(file: MappedFile, format: CheckpointFormat, index: [String: IndexedTensor], metadata: [String: String]) {
        self.path = file.path
        self.file = file
        self.format = format
        self.index = index
        self.metadata = metadata
        self.tensorNames = index.keys.sorted()
        self.fingerprint = Self.fingerprint(index: index, names: tensorNames, fileSize: file.size)
    }

    /// Maps the file at `path` and reads its tensor index. The format comes from
    /// the first bytes, not the extension.
    public static func open(path: String) throws -> Checkpoint {
        let file = try MappedFile(path: path)
        let bytes = file.bytes

        if bytes.count >= 4 && bytes.u32(0) == 0x0403_4b50 {
            let (index, metadata) = try PthReader.readIndex(file)
            return Checkpoint(file: file, format: .pytorch, index: index, metadata: metadata)
        }
        // A safetensors file starts with its header length, then the JSON '{'.
        if bytes.count >= 9 && bytes[8] == UInt8(ascii: "{") {
            let (index, metadata) = try SafetensorsReader.readIndex(file)
            return Checkpoint(file: file, format: .safetensors, index: index, metadata: metadata)
        }
        // torch.save before 1.6 wrote bare pickles starting with PROTO 2 and a magic LONG1.
        if bytes.count >= 3 && bytes[0] == 0x80 && bytes[1] == 0x02 && bytes[2] == 0x8A {
            throw CheckpointError.unsupportedFeature(path: path, detail: "the legacy (before PyTorch 1.6) torch.save format")
        }
        throw CheckpointError.unknownFormat(path: path)
    }

    public func contains(_ name: String) -> Bool { index[name] != nil }

    /// Returns a view of one tensor, valid while this checkpoint is alive.
    public func tensor(_ name: String) throws -> TensorView {
        guard let entry = index[name] else {
            throw CheckpointError.missingTensor(path: path, tensor: name)
        }
        // The index was bounds-checked at open, so the base lies inside the mapping.
        let base = file.bytes.baseAddress!.advanced(by: entry.byteOffset)
        return TensorView(name: name, dtype: entry.dtype, shape: entry.shape, strides: entry.strides, base: base)
    }

    /// Hands the pages of a dense view back to the page cache once its bytes have
    /// been copied (see MappedFile.release). Reading the view again stays valid.
    func releasePages(of view: TensorView) {
        guard view.isContiguous else { return }
        file.release(view.base, count: view.count * view.dtype.byteSize)
    }

    /// Bytes of the storage (pth) or data range (safetensors) holding a tensor;
    /// views into one shared storage all report its full size.
    public func storageByteCount(of name: String) throws -> Int {
        guard let entry = index[name] else {
            throw CheckpointError.missingTensor(path: path, tensor: name)
        }
        return entry.storageByteCount
    }

    /// Hashes one line per tensor, with length-prefixed names so that no name
    /// can imitate a line break, then the file size.
    private static func fingerprint(index: [String: IndexedTensor], names: [String], fileSize: Int) -> String {
        var text = "rwkvx checkpoint index v1\n"
        for name in names {
            let entry = index[name]!
            text += "\(name.utf8.count):\(name) \(entry.dtype.rawValue) \(entry.shape) \(entry.strides) \(entry.storageByteCount)\n"
        }
        text += "file size \(fileSize)\n"
        return SHA256.hexDigest(Array(text.utf8))
    }
}
