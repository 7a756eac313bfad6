// A weight matrix in the layout the kernels take: [rows, cols], rows are outputs
// (PyTorch Linear [out, in]). fp32, fp16 and bf16 weights keep their stored dtype
// and are packed into the kernels' panel layout at load (rwkvx_pack_panels), one
// copy of the same size. The checkpoint pages they came from are then handed back
// to the page cache, so each weight is resident once. int8 weights are
// quantised at load and packed for rwkvx_matmul_q8 (rwkvx_pack_q8_panels).
import CKernels

/// Storage of weights packed or converted at load. Freed with the last matrix that uses it.
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
    /// Stored [cols, rows] for rwkvx_matmul_by_columns instead of packed panels.
    let inputMajor: Bool
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

    /// Packs a [rows, cols] tensor kept as stored, or converts it to `format`. When
    /// `owner` is the checkpoint, the tensor's pages are released afterwards.
    init(_ view: TensorView, keepAlive owner: AnyObject, format: WeightFormat = .stored) {
        precondition(view.shape.count == 2, "Matrix needs a 2-D tensor, got \(view.shape) for \(view.name)")
        if format == .stored && view.isContiguous {
            self.init(rows: view.shape[0], cols: view.shape[1], packing: view.dtype.kernelDType, rowMajor: view.base)
        } else {
            self.init(rows: view.shape[0], cols: view.shape[1], float32: view.toFloat32(),
                      format: format == .int8 ? .int8 : .float32)
        }
        (owner as? Checkpoint)?.releasePages(of: view)
    }

    private init(rows: Int, cols: Int, dtype: rwkvx_dtype, data: UnsafeRawPointer,
                 scales: UnsafePointer<Float>?, owners: [AnyObject], inputMajor: Bool = false) {
        self.rows = rows
        self.cols = cols
        self.dtype = dtype
        self.inputMajor = inputMajor
        self.data = data
        self.scales = scales
        self.owners = owners
    }

    /// Packs row-major [rows, cols] values of a float dtype into panels.
    private init(rows: Int, cols: Int, packing dtype: rwkvx_dtype, rowMajor values: UnsafeRawPointer) {
        precondition(dtype != RWKVX_DTYPE_I8, "int8 matrices are quantised, not packed")
        let buffer = OwnedBuffer(byteCount: rwkvx_packed_bytes(dtype, rows, cols))
        rwkvx_pack_panels(dtype, values, rows, cols, buffer.pointer)
        self.init(rows: rows, cols: cols, dtype: dtype, data: UnsafeRawPointer(buffer.pointer), scales: nil,
                  owners: [buffer])
    }

    /// Builds a matrix from dense row-major fp32 values, converted to `format`.
    init(rows: Int, cols: Int, float32 values: [Float], format: WeightFormat = .float32) {
        precondition(values.count == rows * cols)
        if format == .int8 {
            let bytes = rwkvx_q8_packed_bytes(rows, cols)
            let buffer = OwnedBuffer(byteCount: bytes + rows * 4)
            let q = buffer.pointer.bindMemory(to: Int8.self, capacity: bytes)
            let s = (buffer.pointer + bytes).bindMemory(to: Float.self, capacity: rows)
            var rowMajor = [Int8](repeating: 0, count: rows * cols)
            values.withUnsafeBufferPointer { rwkvx_quantize_i8_rows($0.baseAddress!, rows, cols, &rowMajor, s) }
            rwkvx_pack_q8_panels(rowMajor, rows, cols, q)
            self.init(rows: rows, cols: cols, dtype: RWKVX_DTYPE_I8, data: UnsafeRawPointer(q), scales: UnsafePointer(s),
                      owners: [buffer])
        } else {
            self = values.withUnsafeBytes {
                Matrix(rows: rows, cols: cols, packing: RWKVX_DTYPE_F32, rowMajor: $0.baseAddress!)
            }
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
            let halves = t.map { UInt16(truncatingIfNeeded: $0.bitPattern >> 16) }
            return halves.withUnsafeBytes {
                Matrix(rows: outer, cols: inner, packing: RWKVX_DTYPE_BF16, rowMajor: $0.baseAddress!)
            }
        }
        return Matrix(rows: outer, cols: inner, float32: t)
    }

    /// Keeps a [in, out] tensor used as x @ W as it is stored, for
    /// rwkvx_matmul_by_columns: the LoRA up factors, whose few input columns make
    /// the packed kernels spend more on horizontal sums than on products. fp16 and
    /// bf16 stay as stored unless `keepHalf` is false; fp32 otherwise.
    static func inputMajor(_ view: TensorView, keepHalf: Bool = true) -> Matrix {
        precondition(view.shape.count == 2)
        let inner = view.shape[0], outer = view.shape[1]
        let half = keepHalf && (view.dtype == .bfloat16 || view.dtype == .float16) && view.isContiguous
        let dtype = half ? view.dtype.kernelDType : RWKVX_DTYPE_F32
        let bytes = inner * outer * (half ? 2 : 4)
        let buffer = OwnedBuffer(byteCount: bytes)
        if half {
            buffer.pointer.copyMemory(from: view.base, byteCount: bytes)
        } else {
            view.toFloat32().withUnsafeBytes { buffer.pointer.copyMemory(from: $0.baseAddress!, byteCount: bytes) }
        }
        return Matrix(rows: outer, cols: inner, dtype: dtype, data: UnsafeRawPointer(buffer.pointer), scales: nil,
                      owners: [buffer], inputMajor: true)
    }

    /// y[t][r] = sum_c W[r][c] x[t][c] for rows in `rowRange`; x: [nTok, cols], y: [nTok, rows].
    /// Float dtypes only: int8 matrices run through rwkvx_matmul_q8 (see prepareMatmuls).
    func apply(_ x: UnsafePointer<Float>, nTok: Int, into y: UnsafeMutablePointer<Float>,
               rows rowRange: Range<Int>) {
        precondition(dtype != RWKVX_DTYPE_I8, "int8 matrices need quantised inputs (prepareMatmuls)")
        if inputMajor {
            rwkvx_matmul_by_columns(dtype, data, rows, cols, x, nTok, y, rows, rowRange.lowerBound, rowRange.upperBound)
        } else {
            rwkvx_matmul(dtype, data, scales, rows, cols, x, nTok, y, rows, rowRange.lowerBound, rowRange.upperBound)
        }
    }
}
