// Writes a PyTorch zip checkpoint laid out as torch.save (PyTorch 2.x) writes a
// flat state dict: entries `<archive>/data.pkl`, `.format_version`,
// `.storage_alignment`, `byteorder`, `data/<key>` for each storage, `version`
// and `.data/serialization_id`, with data aligned to 64 bytes (see ZipWriter).
// data.pkl is a protocol 2 pickle of an OrderedDict whose values are
// `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, False,
// OrderedDict())`, each storage being the persistent id
// ('storage', torch.<Type>Storage, key, 'cpu', numel).
//
// Left out: the state dict's `_metadata` attribute (module versions), which
// loading a plain dict of tensors does not need.

public enum PthWriter {
    /// Elements of one dtype that one or more views share, like a torch storage.
    public struct Storage {
        public let dtype: TensorDType
        public let elementCount: Int
        public let bytes: TensorPayload.Bytes

        public init(dtype: TensorDType, data: [UInt8]) {
            self.dtype = dtype
            self.elementCount = data.count / dtype.byteSize
            self.bytes = .array(data)
        }

        public init(dtype: TensorDType, elementCount: Int, fill: @escaping (UnsafeMutableRawBufferPointer) throws -> Void) {
            self.dtype = dtype
            self.elementCount = elementCount
            self.bytes = .fill(fill)
        }
    }

    /// A tensor as a strided view into `storages[storage]`, in elements.
    public struct View {
        public let name: String
        public let storage: Int
        public let storageOffset: Int
        public let shape: [Int]
        public let strides: [Int]

        public init(name: String, storage: Int, storageOffset: Int = 0, shape: [Int], strides: [Int]? = nil) {
            self.name = name
            self.storage = storage
            self.storageOffset = storageOffset
            self.shape = shape
            self.strides = strides ?? TensorBounds.contiguousStrides(shape)
        }
    }

    /// Writes each tensor as its own contiguous storage, in the given order.
    /// `archiveName` is the zip's top folder; torch uses the file name's stem.
    public static func write(tensors: [TensorPayload], to path: String, archiveName: String? = nil) throws {
        var storages: [Storage] = []
        var views: [View] = []
        for tensor in tensors {
            let byteCount = try tensor.validatedByteCount(path: path)
            let storage: Storage
            switch tensor.bytes {
            case .array(let data): storage = Storage(dtype: tensor.dtype, data: data)
            case .fill(let fill): storage = Storage(dtype: tensor.dtype, elementCount: byteCount / tensor.dtype.byteSize, fill: fill)
            }
            views.append(View(name: tensor.name, storage: storages.count, shape: tensor.shape))
            storages.append(storage)
        }
        try write(storages: storages, views: views, to: path, archiveName: archiveName)
    }

    /// Writes views into shared storages, as torch.save does for tensors that
    /// are slices of one another. Storages no view uses are not written.
    public static func write(
        storages: [Storage], views: [View], to path: String, archiveName: String? = nil, forceZip64: Bool = false
    ) throws {
        // Check every view and number storages by first use, as torch does.
        var keys: [Int: Int] = [:]
        var order: [Int] = []
        var names: Set<String> = []
        for view in views {
            guard names.insert(view.name).inserted else {
                throw CheckpointError.invalidTensor(path: path, tensor: view.name, detail: "the name is used twice")
            }
            guard storages.indices.contains(view.storage) else {
                throw CheckpointError.invalidTensor(path: path, tensor: view.name, detail: "storage index \(view.storage) does not exist")
            }
            let storage = storages[view.storage]
            guard let end = TensorBounds.endElement(offset: view.storageOffset, shape: view.shape, strides: view.strides),
                  end <= storage.elementCount
            else {
                throw CheckpointError.outOfBounds(
                    path: path, tensor: view.name,
                    detail: "offset \(view.storageOffset), shape \(view.shape), strides \(view.strides) in a storage of \(storage.elementCount) elements")
            }
            if keys[view.storage] == nil {
                keys[view.storage] = order.count
                order.append(view.storage)
            }
        }
        for index in order {
            let storage = storages[index]
            if case .array(let data) = storage.bytes, data.count != storage.elementCount * storage.dtype.byteSize {
                throw CheckpointError.invalidTensor(
                    path: path, tensor: views.first { $0.storage == index }!.name,
                    detail: "storage data of \(data.count) bytes is not a whole number of \(storage.dtype.rawValue) elements")
            }
        }

        let folder = archiveName ?? defaultArchiveName(path)
        var pickle = StateDictPickle()
        let pickleBytes = pickle.encode(views: views, storages: storages, keys: keys)

        let output = try AtomicOutputFile(path: path)
        var zip = ZipWriter(output: output)
        zip.forceZip64 = forceZip64
        func addText(_ name: String, _ text: String) throws {
            try Array(text.utf8).withUnsafeBytes { try zip.addEntry(name: "\(folder)/\(name)", data: $0) }
        }
        try pickleBytes.withUnsafeBytes { try zip.addEntry(name: "\(folder)/data.pkl", data: $0) }
        try addText(".format_version", "1")
        try addText(".storage_alignment", "\(ZipWriter.dataAlignment)")
        try addText("byteorder", "little")
        for (key, index) in order.enumerated() {
            let storage = storages[index]
            let byteCount = storage.elementCount * storage.dtype.byteSize
            let payload = TensorPayload(name: "", dtype: storage.dtype, shape: [storage.elementCount], bytes: storage.bytes)
            try payload.withBytes(byteCount: byteCount) { try zip.addEntry(name: "\(folder)/data/\(key)", data: $0) }
        }
        try addText("version", "3\n")
        // torch writes a random 40-digit id; deriving it from the pickle keeps
        // the output reproducible for the same tensors.
        let digest = SHA256.hexDigest(pickleBytes)
        let serializationID = digest.unicodeScalars.prefix(40).map { String($0.value % 10) }.joined()
        try addText(".data/serialization_id", serializationID)
        try zip.finish()
        try output.commit()
    }

    private static func defaultArchiveName(_ path: String) -> String {
        let file = path.split(separator: "/").last.map(String.init) ?? "archive"
        let stem = file.split(separator: ".", omittingEmptySubsequences: false).first.map(String.init) ?? ""
        return stem.isEmpty ? "archive" : stem
    }
}
