// Tensors as they sit in a memory-mapped checkpoint: a typed, strided view that
// owns nothing. Reading a view touches only its own pages of the file, which is
// what lets a pipeline stage load just its layer range.
import CKernels
import Foundation

/// Storage types that checkpoints hold; rawValue is the safetensors dtype name.
public enum TensorDType: String, Sendable, CaseIterable {
    case float32 = "F32"
    case float16 = "F16"
    case bfloat16 = "BF16"

    public var byteSize: Int {
        switch self {
        case .float32: return 4
        case .float16, .bfloat16: return 2
        }
    }

    /// The kernel header's name for this type.
    public var kernelDType: rwkvx_dtype {
        switch self {
        case .float32: return RWKVX_DTYPE_F32
        case .float16: return RWKVX_DTYPE_F16
        case .bfloat16: return RWKVX_DTYPE_BF16
        }
    }
}

/// One tensor of a mapped checkpoint. `base` points at element 0 (storage offset
/// already applied) and stays valid while the `Checkpoint` that made it is alive.
public struct TensorView: @unchecked Sendable {
    public let name: String
    public let dtype: TensorDType
    public let shape: [Int]
    /// Strides in elements, one per dimension.
    public let strides: [Int]
    public let base: UnsafeRawPointer

    public init(name: String, dtype: TensorDType, shape: [Int], strides: [Int], base: UnsafeRawPointer) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.strides = strides
        self.base = base
    }

    public var count: Int { shape.reduce(1, *) }

    /// True when the elements are densely packed in row-major order.
    public var isContiguous: Bool {
        var expected = 1
        for d in stride(from: shape.count - 1, through: 0, by: -1) where shape[d] != 1 {
            if strides[d] != expected { return false }
            expected *= shape[d]
        }
        return true
    }

    /// Copies the tensor into a dense row-major fp32 array, whatever its dtype and strides.
    public func toFloat32() -> [Float] {
        let n = count
        var out = [Float](repeating: 0, count: n)
        if n == 0 { return out }
        out.withUnsafeMutableBufferPointer { dst in
            if isContiguous {
                rwkvx_to_f32(dtype.kernelDType, base, dst.baseAddress!, n)
                return
            }
            // Walk the strided index space one innermost row at a time.
            let rank = shape.count
            var index = [Int](repeating: 0, count: rank)
            let inner = shape[rank - 1]
            let innerStride = strides[rank - 1]
            var written = 0
            while written < n {
                var offset = 0
                for d in 0..<(rank - 1) { offset += index[d] * strides[d] }
                for i in 0..<inner {
                    let element = base.advanced(by: (offset + i * innerStride) * dtype.byteSize)
                    rwkvx_to_f32(dtype.kernelDType, element, dst.baseAddress! + written + i, 1)
                }
                written += inner
                var d = rank - 2
                while d >= 0 {
                    index[d] += 1
                    if index[d] < shape[d] { break }
                    index[d] = 0
                    d -= 1
                }
            }
        }
        return out
    }
}

/// Every way a checkpoint can fail to load; each case names the file and, where
/// there is one, the tensor.
public enum CheckpointError: Error, CustomStringConvertible, Equatable {
    case fileNotFound(path: String)
    /// A directory, device or pipe where a checkpoint file was expected.
    case notRegularFile(path: String)
    case ioFailed(path: String, function: String, errno: Int32)
    case unknownFormat(path: String)
    case truncated(path: String, detail: String)
    case corrupt(path: String, detail: String)
    case unsupportedPickle(path: String, detail: String)
    case unsupportedDType(path: String, tensor: String, dtype: String)
    case missingTensor(path: String, tensor: String)
    case unexpectedTensor(path: String, tensor: String)
    case wrongShape(path: String, tensor: String, expected: [Int], actual: [Int])
    case outOfBounds(path: String, tensor: String, detail: String)
    /// A valid file that uses something the readers leave out: a compressed zip
    /// entry, a big-endian archive, a newer pickle protocol.
    case unsupportedFeature(path: String, detail: String)
    /// A writer was given a tensor it cannot store as described.
    case invalidTensor(path: String, tensor: String, detail: String)

    public var description: String {
        switch self {
        case .fileNotFound(let path):
            return "checkpoint not found: \(path); pass the path of a .pth or .safetensors file"
        case .notRegularFile(let path):
            return "\(path) is not a regular file (a directory, device or pipe); pass a .pth or .safetensors checkpoint"
        case .ioFailed(let path, let function, let errno):
            return "\(function) failed on \(path): \(String(cString: strerror(errno))) (errno \(errno))"
        case .unknownFormat(let path):
            return "\(path) is neither a PyTorch zip checkpoint (.pth) nor a safetensors file"
        case .truncated(let path, let detail):
            return "\(path) is truncated: \(detail); copy or download the file again"
        case .corrupt(let path, let detail):
            return "\(path) is corrupt: \(detail)"
        case .unsupportedPickle(let path, let detail):
            return "\(path): unsupported pickle content (\(detail)); only state dicts of tensors saved by torch.save are read"
        case .unsupportedDType(let path, let tensor, let dtype):
            return "\(path): tensor \(tensor) has unsupported dtype \(dtype); convert it to bf16, fp16 or fp32"
        case .missingTensor(let path, let tensor):
            return "\(path): missing tensor \(tensor)"
        case .unexpectedTensor(let path, let tensor):
            return "\(path): unexpected tensor \(tensor) for this model layout"
        case .wrongShape(let path, let tensor, let expected, let actual):
            return "\(path): tensor \(tensor) has shape \(actual), expected \(expected)"
        case .outOfBounds(let path, let tensor, let detail):
            return "\(path): tensor \(tensor) lies outside its storage: \(detail)"
        case .unsupportedFeature(let path, let detail):
            return "\(path) uses \(detail), which rwkvx does not read; save it again with torch.save or as safetensors"
        case .invalidTensor(let path, let tensor, let detail):
            return "cannot write tensor \(tensor) to \(path): \(detail)"
        }
    }
}
