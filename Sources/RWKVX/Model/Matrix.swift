// A weight matrix in the layout the kernels take: [rows, cols] row-major, rows are
// outputs (PyTorch Linear [out, in]). Weights stay in their stored dtype and point
// into the mapped checkpoint where possible, so loading a model copies nothing.
import CKernels

/// Storage of weights that had to be converted at load (strided views, LoRA
/// transposes, int8 quantisation). Freed with the last matrix that uses it.
final class OwnedBuffer: @unchecked Sendable {
    let pointer: UnsafeMutableRawPointer
    let byteCount: Int

    init(byteCount: Int) {
        self.byteCount = byteCount
        pointer = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
    }

    deinit { pointer.deallocate() }
}

/// Weight precision chosen at load: keep what the checkpoint stores, or convert.
public enum WeightFormat: String, Sendable, Codable, CaseIterable {
    case stored = "auto"
    case float32 = "fp32"
    case int8 = "int8"
}

public struct Matrix: @unchecked Sendable {
    public let rows: Int
    public let cols: Int
    public let dtype: rwkvx_dtype
    let data: UnsafeRawPointer
    let scales: UnsafePointer<Float>?
    // Keeps converted storage, or the mapped checkpoint, alive.
    let owners: [AnyObject]

    /// Bytes read by one pass over the matrix (what a batch-1 matvec costs in bandwidth).
    public var byteCount: Int {
        let element: Int
        switch dtype {
        case RWKVX_DTYPE_F32: element = 4
        case RWKVX_DTYPE_I8: element = 1
        default: element = 2
        }
        return rows * cols * element + (scales == nil ? 0 : rows * 4)
    }

    /// Wraps a [rows, cols] tensor, without copying when it is contiguous and kept as stored.
    init(_ view: TensorView, keepAlive owner: AnyObject, format: WeightFormat = .stored) {
        precondition(view.shape.count == 2, "Matrix needs a 2-D tensor, got \(view.shape) for \(view.name)")
        if format == .stored && view.isContiguous {
            self.init(rows: view.shape[0], cols: view.shape[1], dtype: view.dtype.kernelDType,
                      data: view.base, scales: nil, owners: [owner])
        } else {
            self.init(rows: view.shape[0], cols: view.shape[1], float32: view.toFloat32(),
                      format: format == .int8 ? .int8 : .float32)
        }
    }

    private init(rows: Int, cols: Int, dtype: rwkvx_dtype, data: UnsafeRawPointer,
                 scales: UnsafePointer<Float>?, owners: [AnyObject]) {
        self.rows = rows
        self.cols = cols
        self.dtype = dtype
        self.data = data
        self.scales = scales
        self.owners = owners
    }

    /// Builds a matrix from dense row-major fp32 values, converted to `format`.
    init(rows: Int, cols: Int, float32 values: [Float], format: WeightFormat = .float32) {
        precondition(values.count == rows * cols)
        self.rows = rows
        self.cols = cols
        if format == .int8 {
            let buffer = OwnedBuffer(byteCount: rows * cols + rows * 4)
            let q = buffer.pointer.bindMemory(to: Int8.self, capacity: rows * cols)
            let s = (buffer.pointer + rows * cols).bindMemory(to: Float.self, capacity: rows)
            values.withUnsafeBufferPointer { rwkvx_quantize_i8_rows($0.baseAddress!, rows, cols, q, s) }
            dtype = RWKVX_DTYPE_I8
            data = UnsafeRawPointer(q)
            scales = UnsafePointer(s)
            owners = [buffer]
        } else {
            let buffer = OwnedBuffer(byteCount: rows * cols * 4)
            values.withUnsafeBytes { buffer.pointer.copyMemory(from: $0.baseAddress!, byteCount: $0.count) }
            dtype = RWKVX_DTYPE_F32
            data = UnsafeRawPointer(buffer.pointer)
            scales = nil
            owners = [buffer]
        }
    }

    /// Builds the transpose of a [cols, rows] tensor in fp32: LoRA factors are stored
    /// [in, out] (used as x @ W), and the kernels want [out, in].
    static func transposed(_ view: TensorView, keepBF16: Bool = false) -> Matrix {
        precondition(view.shape.count == 2)
        let inner = view.shape[0], outer = view.shape[1]
        let values = view.toFloat32()
        var t = [Float](repeating: 0, count: values.count)
        for i in 0..<inner {
            for o in 0..<outer { t[o * inner + i] = values[i * outer + o] }
        }
        if keepBF16 && view.dtype == .bfloat16 {
            // Every value came from a bf16, so its low 16 bits are zero and the
            // truncation is exact: the kernels read back the same fp32 values.
            let buffer = OwnedBuffer(byteCount: t.count * 2)
            let halves = buffer.pointer.bindMemory(to: UInt16.self, capacity: t.count)
            for index in t.indices { halves[index] = UInt16(truncatingIfNeeded: t[index].bitPattern >> 16) }
            return Matrix(rows: outer, cols: inner, dtype: RWKVX_DTYPE_BF16, data: UnsafeRawPointer(buffer.pointer),
                          scales: nil, owners: [buffer])
        }
        return Matrix(rows: outer, cols: inner, float32: t)
    }

    /// y[t][r] = sum_c W[r][c] x[t][c] for rows in `rowRange`; x: [nTok, cols], y: [nTok, rows].
    func apply(_ x: UnsafePointer<Float>, nTok: Int, into y: UnsafeMutablePointer<Float>,
               rows rowRange: Range<Int>) {
        rwkvx_matmul(dtype, data, scales, cols, x, nTok, y, rows, rowRange.lowerBound, rowRange.upperBound)
    }
}
