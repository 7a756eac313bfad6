// Writes a safetensors file: the 8-byte little-endian header length, a JSON
// header padded with spaces to a multiple of 8 bytes (so the data section is
// 8-byte aligned), then each tensor's bytes in name order.

public enum SafetensorsWriter {
    public static func write(tensors: [TensorPayload], metadata: [String: String] = [:], to path: String) throws {
        let sorted = tensors.sorted { $0.name < $1.name }
        var byteCounts: [Int] = []
        for (index, tensor) in sorted.enumerated() {
            if tensor.name == "__metadata__" || (index > 0 && sorted[index - 1].name == tensor.name) {
                throw CheckpointError.invalidTensor(path: path, tensor: tensor.name, detail: "the name is reserved or used twice")
            }
            byteCounts.append(try tensor.validatedByteCount(path: path))
        }

        // Header: __metadata__ first, then tensors sorted by name.
        var fields: [String] = []
        if !metadata.isEmpty {
            let pairs = metadata.keys.sorted().map { "\(jsonString($0)):\(jsonString(metadata[$0]!))" }
            fields.append("\"__metadata__\":{\(pairs.joined(separator: ","))}")
        }
        var begin = 0
        for (tensor, byteCount) in zip(sorted, byteCounts) {
            let shape = tensor.shape.map(String.init).joined(separator: ",")
            fields.append(
                "\(jsonString(tensor.name)):{\"dtype\":\"\(tensor.dtype.rawValue)\",\"shape\":[\(shape)],\"data_offsets\":[\(begin),\(begin + byteCount)]}")
            begin += byteCount
        }
        var header = Array("{\(fields.joined(separator: ","))}".utf8)
        while (8 + header.count) % 8 != 0 { header.append(UInt8(ascii: " ")) }

        let output = try AtomicOutputFile(path: path)
        var prefix: [UInt8] = []
        prefix.appendLE(UInt64(header.count))
        try output.write(prefix)
        try output.write(header)
        for (tensor, byteCount) in zip(sorted, byteCounts) {
            try tensor.withBytes(byteCount: byteCount) { try output.write($0) }
        }
        try output.commit()
    }

    public static func write(
        tensors: [(name: String, dtype: TensorDType, shape: [Int], data: [UInt8])],
        metadata: [String: String] = [:], to path: String
    ) throws {
        try write(
            tensors: tensors.map { TensorPayload(name: $0.name, dtype: $0.dtype, shape: $0.shape, data: $0.data) },
            metadata: metadata, to: path)
    }
}

/// A JSON string literal, escaping quotes, backslashes and control characters.
func jsonString(_ text: String) -> String {
    var result = "\""
    for scalar in text.unicodeScalars {
        switch scalar {
        case "\"": result += "\\\""
        case "\\": result += "\\\\"
        case "\n": result += "\\n"
        case "\r": result += "\\r"
        case "\t": result += "\\t"
        case _ where scalar.value < 0x20:
            let hex = String(scalar.value, radix: 16)
            result += "\\u" + String(repeating: "0", count: 4 - hex.count) + hex
        default: result.unicodeScalars.append(scalar)
        }
    }
    return result + "\""
}
