// TEMPORARY: minimal safetensors-only reader, replaced by the full checkpoint layer.
import Foundation

public final class Checkpoint: @unchecked Sendable {
    public let path: String
    let data: Data
    var index: [String: (TensorDType, [Int], Int)] = [:]
    public var tensorNames: [String] { index.keys.sorted() }

    public static func open(path: String) throws -> Checkpoint { try Checkpoint(path: path) }

    init(path: String) throws {
        self.path = path
        guard let d = FileManager.default.contents(atPath: path) else { throw CheckpointError.fileNotFound(path: path) }
        data = d
        let n = d.withUnsafeBytes { $0.loadUnaligned(as: UInt64.self) }
        let header = try JSONSerialization.jsonObject(with: d[8..<(8 + Int(n))]) as! [String: Any]
        for (k, v) in header where k != "__metadata__" {
            let e = v as! [String: Any]
            let offs = e["data_offsets"] as! [Int]
            index[k] = (TensorDType(rawValue: e["dtype"] as! String)!, e["shape"] as! [Int], 8 + Int(n) + offs[0])
        }
    }

    public func contains(_ name: String) -> Bool { index[name] != nil }

    public func tensor(_ name: String) throws -> TensorView {
        guard let (dt, shape, off) = index[name] else { throw CheckpointError.missingTensor(path: path, tensor: name) }
        var strides = [Int](repeating: 1, count: shape.count)
        for d in stride(from: shape.count - 2, through: 0, by: -1) { strides[d] = strides[d + 1] * shape[d + 1] }
        let base = data.withUnsafeBytes { $0.baseAddress! + off }
        return TensorView(name: name, dtype: dt, shape: shape, strides: strides, base: base)
    }
}
