// fp32 <-> F32 / BF16 / F16 conversions of tensor payloads.
import XCTest
@testable import RWKVXCluster

final class ClusterTensorCodingTests: XCTestCase {
    func testF32RoundTripIsBitExact() throws {
        var values = testFloats(count: 4_096)
        values += [0, -0.0, .infinity, -.infinity, .leastNonzeroMagnitude, .greatestFiniteMagnitude, .nan]
        let bytes = TensorCoding.encode(values, as: .f32)
        XCTAssertEqual(bytes.count, values.count * 4)
        let decoded = try TensorCoding.decodeFloats(bytes, dtype: .f32)
        XCTAssertEqual(decoded.map(\.bitPattern), values.map(\.bitPattern))
    }

    func testF32BytesAreLittleEndian() {
        XCTAssertEqual(TensorCoding.encode([1.0], as: .f32), [0x00, 0x00, 0x80, 0x3F])
    }

    func testBF16WithinHalfUlp() throws {
        let values = testFloats(count: 4_096)
        XCTAssertGreaterThan(Set(values).count, 4_000, "test data must not collapse to a few values")
        let decoded = try TensorCoding.decodeFloats(TensorCoding.encode(values, as: .bf16), dtype: .bf16)
        var maxRelative: Float = 0
        for (value, back) in zip(values, decoded) where value != 0 {
            maxRelative = max(maxRelative, abs(back - value) / abs(value))
        }
        // bfloat16 has 8 significand bits: round to nearest errs by at most 2^-8.
        XCTAssertLessThanOrEqual(maxRelative, 1.0 / 256)
        XCTAssertGreaterThan(maxRelative, 0, "conversion must actually round")
    }

    func testBF16RoundsToNearestEven() {
        // 1 + 2^-8 is halfway between bf16 1.0 and 1 + 2^-7: ties go to the even 1.0.
        XCTAssertEqual(TensorCoding.bfloat16Bits(Float(bitPattern: 0x3F80_8000)), 0x3F80)
        // 1 + 2^-7 + 2^-8 is halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even).
        XCTAssertEqual(TensorCoding.bfloat16Bits(Float(bitPattern: 0x3F81_8000)), 0x3F82)
        // Just above halfway rounds up.
        XCTAssertEqual(TensorCoding.bfloat16Bits(Float(bitPattern: 0x3F80_8001)), 0x3F81)
        XCTAssertEqual(TensorCoding.bfloat16Bits(.infinity), 0x7F80)
        XCTAssertEqual(TensorCoding.bfloat16Bits(.greatestFiniteMagnitude), 0x7F80, "overflow rounds to infinity")
        let nan = TensorCoding.bfloat16Bits(Float(bitPattern: 0x7F80_0001))
        XCTAssertTrue(Float(bitPattern: UInt32(nan) << 16).isNaN, "a NaN must stay NaN")
    }

    func testF16WithinHalfUlp() throws {
        // Stay inside binary16's normal range (2^-14 ... 65504).
        let values = testFloats(count: 4_096).filter { abs($0) >= 1.0 / 8_192 && abs($0) < 60_000 }
        XCTAssertGreaterThan(values.count, 1_000)
        let decoded = try TensorCoding.decodeFloats(TensorCoding.encode(values, as: .f16), dtype: .f16)
        var maxRelative: Float = 0
        for (value, back) in zip(values, decoded) {
            maxRelative = max(maxRelative, abs(back - value) / abs(value))
        }
        // binary16 has 11 significand bits: round to nearest errs by at most 2^-11.
        XCTAssertLessThanOrEqual(maxRelative, 1.0 / 2_048)
        XCTAssertGreaterThan(maxRelative, 0)
        XCTAssertEqual(TensorCoding.encode([1.0], as: .f16), [0x00, 0x3C])
        XCTAssertEqual(try TensorCoding.decodeFloats(TensorCoding.encode([70_000], as: .f16), dtype: .f16), [.infinity])
    }

    func testDecodeRejectsPartialElement() {
        XCTAssertThrowsError(try TensorCoding.decodeFloats([0, 0, 0], dtype: .f32)) { error in
            XCTAssertEqual((error as? WireError)?.code, .tensorSizeMismatch)
        }
    }
}
