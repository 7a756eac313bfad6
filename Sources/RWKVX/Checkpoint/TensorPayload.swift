// A tensor handed to a checkpoint writer: name, dtype, shape and its dense
// row-major bytes, given either as an array or as a closure that fills a
// buffer. The closure form lets a writer produce a multi-gigabyte checkpoint
// while holding only one tensor in memory.

public struct TensorPayload {
    public enum Bytes {
        case array([UInt8])
        /// Called once with a zeroed buffer of exactly the tensor's byte count.
        case fill((UnsafeMutableRawBufferPointer) throws -> Void)
    }

    public let name: String
    public let dtype: TensorDType
    public let shape: [Int]
    public let bytes: Bytes

    public init(name: String, dtype: TensorDType, shape: [Int], data: [UInt8]) {
        self.init(name: name, dtype: dtype, shape: shape, bytes: .array(data))
    }

    public init(name: String, dtype: TensorDType, shape: [Int], fill: @escaping (UnsafeMutableRawBufferPointer) throws -> Void) {
        self.init(name: name, dtype: dtype, shape: shape, bytes: .fill(fill))
    }

    public init(name: String, dtype: TensorDType, shape: [Int], bytes: Bytes) {
        self.name = name
        self.dtype = dtype
        self.shape = shape
        self.bytes = bytes
    }

    /// Copies a view's elements, in its own dtype, into dense row-major order.
    public init(copying view: TensorView, name: String? = nil) {
        let size = view.dtype.byteSize
        var data = [UInt8](repeating: 0, count: view.count * size)
        data.withUnsafeMutableBytes { destination in
            var written = 0
            forEachElementOffset(shape: view.shape, strides: view.strides) { element in
                let source = UnsafeRawBufferPointer(start: view.base + element * size, count: size)
                UnsafeMutableRawBufferPointer(rebasing: destination[written..<(written + size)]).copyMemory(from: source)
                written += size
            }
        }
        self.init(name: name ?? view.name, dtype: view.dtype, shape: view.shape, data: data)
    }

    /// Bytes the shape and dtype need, or nil on a negative dimension or overflow.
    var expectedByteCount: Int? {
        guard let count = TensorBounds.elementCount(shape) else { return nil }
        let (bytes, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
        return overflow ? nil : bytes
    }

    /// Checks the byte count against the shape; `path` names the file being written.
    func validatedByteCount(path: String) throws -> Int {
        guard let expected = expectedByteCount else {
            throw CheckpointError.invalidTensor(path: path, tensor: name, detail: "shape \(shape) is negative or too large")
        }
        if case .array(let data) = bytes, data.count != expected {
            throw CheckpointError.invalidTensor(
                path: path, tensor: name,
                detail: "data has \(data.count) bytes but shape \(shape) of \(dtype.rawValue) needs \(expected)")
        }
        return expected
    }

    /// Calls `body` with the tensor's bytes, filling a temporary buffer when needed.
    func withBytes<Result>(byteCount: Int, _ body: (UnsafeRawBufferPointer) throws -> Result) throws -> Result {
        switch bytes {
        case .array(let data):
            return try data.withUnsafeBytes(body)
        case .fill(let fill):
            var data = [UInt8](repeating: 0, count: byteCount)
            try data.withUnsafeMutableBytes { try fill($0) }
            return try data.withUnsafeBytes(body)
        }
    }
}

/// Calls `body` with the element offset of every index of a strided tensor, in
/// row-major order.
func forEachElementOffset(shape: [Int], strides: [Int], _ body: (Int) -> Void) {
    guard let count = TensorBounds.elementCount(shape), count > 0 else { return }
    var index = [Int](repeating: 0, count: shape.count)
    var offset = 0
    for _ in 0..<count {
        body(offset)
        var dimension = shape.count - 1
        while dimension >= 0 {
            index[dimension] += 1
            offset += strides[dimension]
            if index[dimension] < shape[dimension] { break }
            offset -= strides[dimension] * shape[dimension]
            index[dimension] = 0
            dimension -= 1
        }
    }
}
