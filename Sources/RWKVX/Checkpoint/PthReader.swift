// Reads the tensor index of a PyTorch zip checkpoint: the archive's
// `<archive>/data.pkl` (a pickled flat state dict, see Unpickler) and one
// `<archive>/data/<key>` entry per storage. Tensors may be strided views into a
// shared storage; every view is checked to lie inside its storage entry.

enum PthReader {
    static func readIndex(_ file: MappedFile) throws -> (tensors: [String: IndexedTensor], metadata: [String: String]) {
        let path = file.path
        let archive = try ZipArchive(file: file)

        // The top folder is the saved file's stem (or "archive"), so find it from data.pkl.
        guard let pickleEntry = archive.entries.first(where: { entry in
            let parts = entry.name.split(separator: "/", omittingEmptySubsequences: false)
            return parts.count == 2 && parts[1] == "data.pkl"
        }) else {
            throw CheckpointError.unknownFormat(path: path)
        }
        let prefix = String(pickleEntry.name.dropLast("data.pkl".count))

        let metadata = readTextRecords(archive, prefix: prefix)
        if let order = metadata["byteorder"], order != "little" {
            throw CheckpointError.unsupportedFeature(path: path, detail: "\(order)-endian tensor data")
        }

        let pickleBytes = archive.data(of: pickleEntry)
        guard CRC32.checksum(pickleBytes) == pickleEntry.crc32 else {
            throw CheckpointError.corrupt(path: path, detail: "CRC-32 of \(pickleEntry.name) does not match its zip entry")
        }
        var unpickler = Unpickler(path: path, entryName: pickleEntry.name, data: pickleBytes)
        guard case .dict(let stateDict) = try unpickler.load() else {
            throw CheckpointError.unsupportedPickle(path: path, detail: "the top-level object is not a dict of tensors")
        }

        var tensors: [String: IndexedTensor] = [:]
        for (key, value) in stateDict.items {
            guard case .string(let name) = key else {
                throw CheckpointError.unsupportedPickle(path: path, detail: "a state dict key that is not a string")
            }
            guard case .tensor(let tensor) = value else {
                throw CheckpointError.unsupportedPickle(path: path, detail: "the value of '\(name)' is not a tensor")
            }
            guard tensors[name] == nil else {
                throw CheckpointError.corrupt(path: path, detail: "tensor \(name) appears twice in the state dict")
            }
            tensors[name] = try index(tensor, name: name, archive: archive, prefix: prefix)
        }
        return (tensors, metadata)
    }

    private static func index(_ tensor: PickledTensor, name: String, archive: ZipArchive, prefix: String) throws -> IndexedTensor {
        let path = archive.file.path
        let storage = tensor.storage
        guard let dtype = storage.dtype else {
            throw CheckpointError.unsupportedDType(path: path, tensor: name, dtype: storage.dtypeName)
        }

        let entryName = "\(prefix)data/\(storage.key)"
        guard let entry = archive.entry(named: entryName) else {
            throw CheckpointError.corrupt(path: path, detail: "storage of tensor \(name) has no zip entry \(entryName)")
        }
        let (storageBytes, overflow) = storage.elementCount.multipliedReportingOverflow(by: dtype.byteSize)
        guard !overflow, storageBytes <= entry.size else {
            throw CheckpointError.corrupt(
                path: path,
                detail: "storage \(entryName) of tensor \(name) has \(entry.size) bytes, fewer than its \(storage.elementCount) \(storage.dtypeName) elements")
        }

        guard TensorBounds.elementCount(tensor.shape) != nil else {
            throw CheckpointError.corrupt(path: path, detail: "tensor \(name) has invalid shape \(tensor.shape)")
        }
        guard let end = TensorBounds.endElement(offset: tensor.storageOffset, shape: tensor.shape, strides: tensor.strides),
              end <= storage.elementCount
        else {
            throw CheckpointError.outOfBounds(
                path: path, tensor: name,
                detail: "offset \(tensor.storageOffset), shape \(tensor.shape), strides \(tensor.strides) in storage \(entryName) of \(storage.elementCount) elements")
        }

        return IndexedTensor(
            dtype: dtype, shape: tensor.shape, strides: tensor.strides,
            byteOffset: entry.dataOffset + tensor.storageOffset * dtype.byteSize,
            storageByteCount: storageBytes)
    }

    /// The archive's short text records (`byteorder`, `version`, ...), keyed by
    /// their name inside the archive folder.
    private static func readTextRecords(_ archive: ZipArchive, prefix: String) -> [String: String] {
        var records: [String: String] = [:]
        for entry in archive.entries where entry.name.hasPrefix(prefix) && entry.size <= 256 {
            let key = String(entry.name.dropFirst(prefix.count))
            if key == "data.pkl" || key.hasPrefix("data/") { continue }
            guard let text = String(validating: archive.data(of: entry), as: UTF8.self) else { continue }
            records[key] = text.trimmingWhitespace()
        }
        return records
    }
}

extension String {
    func trimmingWhitespace() -> String {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\n" || $0 == "\r" || $0 == "\t" }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else { return "" }
        return String(self[first...last])
    }
}
