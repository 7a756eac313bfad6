// Tensor frames on the wire: dtypes, descriptors, and fp32 <-> F32/BF16/F16.
//
// Payloads are raw little-endian element bytes with no header. BF16 keeps the
// top 16 bits of an fp32 rounded to nearest even; F16 is IEEE binary16 via
// Swift's Float16 conversion, which also rounds to nearest even.

/// Element type of a tensor frame (proto enum DType).
public enum DType: UInt32, Sendable, CaseIterable {
    case f32 = 1
    case f16 = 2
    case bf16 = 3
    case i32 = 4
    case u8 = 5

    public var elementSize: Int {
        switch self {
        case .f32, .i32: 4
        case .f16, .bf16: 2
        case .u8: 1
        }
    }
}

/// Location and layout of one tensor frame (proto message TensorDescriptor).
public struct TensorDescriptor: Sendable, Equatable {
    public var dtype: DType
    /// Row-major dimensions, outermost first, e.g. [T, n_embd].
    public var shape: [Int]
    /// Index among the tensor frames that follow the header frame.
    public var frameIndex: Int
    public var byteLength: Int
    public var name: String

    public init(dtype: DType, shape: [Int], frameIndex: Int, byteLength: Int, name: String = "") {
        self.dtype = dtype
        self.shape = shape
        self.frameIndex = frameIndex
        self.byteLength = byteLength
        self.name = name
    }

    /// Bytes the shape and dtype call for, or nil when the product overflows Int.
    public var expectedByteLength: Int? {
        var bytes = dtype.elementSize
        for dimension in shape {
            guard dimension >= 0 else { return nil }
            let (product, overflow) = bytes.multipliedReportingOverflow(by: dimension)
            if overflow { return nil }
            bytes = product
        }
        return bytes
    }
}

/// A tensor payload with its layout, before it is given a frame index.
public struct WireTensor: Sendable, Equatable {
    public var dtype: DType
    public var shape: [Int]
    public var bytes: [UInt8]
    public var name: String

    public init(dtype: DType, shape: [Int], bytes: [UInt8], name: String = "") {
        self.dtype = dtype
        self.shape = shape
        self.bytes = bytes
        self.name = name
    }

    /// Encodes fp32 `values` of `shape` as `dtype` (F32, BF16 or F16).
    public init(floats values: [Float], shape: [Int], dtype: DType, name: String = "") {
        precondition(shape.reduce(1, *) == values.count, "shape \(shape) does not match \(values.count) values")
        self.init(dtype: dtype, shape: shape, bytes: TensorCoding.encode(values, as: dtype), name: name)
    }

    /// Decodes the payload into fp32. Throws for dtypes that are not floating point.
    public func floats() throws -> [Float] {
        try TensorCoding.decodeFloats(bytes, dtype: dtype)
    }
}

/// Conversions between fp32 arrays and little-endian F32/BF16/F16 bytes.
public enum TensorCoding {
    public static func encode(_ values: [Float], as dtype: DType) -> [UInt8] {
        switch dtype {
        case .f32:
            return littleEndianBytes(values.map { $0.bitPattern })
        case .bf16:
            return littleEndianBytes(values.map(bfloat16Bits))
        case .f16:
            return littleEndianBytes(values.map { Float16($0).bitPattern })
        case .i32, .u8:
            preconditionFailure("fp32 values cannot be encoded as \(dtype)")
        }
    }

    public static func decodeFloats(_ bytes: [UInt8], dtype: DType) throws -> [Float] {
        guard bytes.count % dtype.elementSize == 0 else {
            throw WireError.tensorSizeMismatch(
                name: "", dtype: dtype, shape: [], expectedBytes: bytes.count / dtype.elementSize * dtype.elementSize,
                descriptorBytes: bytes.count, frameBytes: bytes.count)
        }
        switch dtype {
        case .f32:
            return loadLittleEndian(bytes, as: UInt32.self).map(Float.init(bitPattern:))
        case .bf16:
            return loadLittleEndian(bytes, as: UInt16.self).map { Float(bitPattern: UInt32($0) << 16) }
        case .f16:
            return loadLittleEndian(bytes, as: UInt16.self).map { Float(Float16(bitPattern: $0)) }
        case .i32, .u8:
            throw WireError.invalidField(message: "TensorDescriptor", field: "dtype", value: "\(dtype) is not a float type")
        }
    }

    /// fp32 -> bfloat16 bits, rounding to nearest even. NaN stays a quiet NaN
    /// (rounding could otherwise carry a NaN payload into infinity).
    public static func bfloat16Bits(_ value: Float) -> UInt16 {
        let bits = value.bitPattern
        if value.isNaN { return UInt16(truncatingIfNeeded: bits >> 16) | 0x0040 }
        let roundingBias: UInt32 = 0x7FFF + ((bits >> 16) & 1)
        return UInt16(truncatingIfNeeded: (bits &+ roundingBias) >> 16)
    }

    static func littleEndianBytes<T: FixedWidthInteger>(_ values: [T]) -> [UInt8] {
        let count = values.count * MemoryLayout<T>.size
        return [UInt8](unsafeUninitializedCapacity: count) { buffer, initialized in
            let raw = UnsafeMutableRawBufferPointer(buffer)
            for (index, value) in values.enumerated() {
                raw.storeBytes(of: value.littleEndian, toByteOffset: index * MemoryLayout<T>.size, as: T.self)
            }
            initialized = count
        }
    }

    static func loadLittleEndian<T: FixedWidthInteger>(_ bytes: [UInt8], as type: T.Type) -> [T] {
        let count = bytes.count / MemoryLayout<T>.size
        return bytes.withUnsafeBytes { raw in
            (0..<count).map { T(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * MemoryLayout<T>.size, as: T.self)) }
        }
    }
}
