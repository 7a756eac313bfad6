// Reads the tensor index of a safetensors file (huggingface/safetensors format):
// an 8-byte little-endian header length N, N bytes of JSON mapping each tensor
// name to {dtype, shape, data_offsets} plus an optional `__metadata__` map of
// strings, then the data section. data_offsets are [begin, end) byte offsets
// relative to the data section. Tensors are dense and row-major.
//
// Checks, as the reference implementation makes them: header length within
// 100 MB, each range exactly as long as its shape and dtype need, no two ranges
// overlapping. A range past the end of the file means the file is truncated.
import Foundation

enum SafetensorsReader {
    /// The reference implementation's limit on the JSON header size.
    static let maxHeaderLength = 100_000_000

    static func readIndex(_ file: MappedFile) throws -> (tensors: [String: IndexedTensor], metadata: [String: String]) {
        let path = file.path
        let bytes = file.bytes
        func corrupt(_ detail: String) -> CheckpointError { .corrupt(path: path, detail: detail) }

        guard bytes.count >= 8 else {
            throw CheckpointError.truncated(path: path, detail: "\(bytes.count) bytes is too short for the 8-byte header length")
        }
        let headerLength = bytes.u64(0)
        guard headerLength <= UInt64(maxHeaderLength) else {
            throw corrupt("header length \(headerLength) exceeds the \(maxHeaderLength)-byte limit")
        }
        let dataStart = 8 + Int(headerLength)
        guard dataStart <= bytes.count else {
            throw CheckpointError.truncated(
                path: path, detail: "the header needs \(headerLength) bytes but the file has \(bytes.count - 8) after the length")
        }

        let headerData = Data(UnsafeRawBufferPointer(rebasing: bytes[8..<dataStart]))
        guard let object = try? JSONSerialization.jsonObject(with: headerData),
              let header = object as? [String: Any]
        else {
            throw corrupt("the \(headerLength)-byte header is not a JSON object")
        }

        let dataSize = bytes.count - dataStart
        var metadata: [String: String] = [:]
        var tensors: [String: IndexedTensor] = [:]
        var ranges: [(begin: Int, end: Int, name: String)] = []
        // In name order, so a damaged file gives the same error on every run.
        for (name, value) in header.sorted(by: { $0.key < $1.key }) {
            if name == "__metadata__" {
                guard let map = value as? [String: String] else {
                    throw corrupt("__metadata__ is not a map of strings to strings")
                }
                metadata = map
                continue
            }
            guard let fields = value as? [String: Any],
                  let dtypeName = fields["dtype"] as? String,
                  let shape = intArray(fields["shape"]),
                  let offsets = intArray(fields["data_offsets"]), offsets.count == 2
            else {
                throw corrupt("header entry of tensor \(name) lacks a string dtype, an integer shape or two data_offsets")
            }
            guard let dtype = TensorDType(rawValue: dtypeName) else {
                throw CheckpointError.unsupportedDType(path: path, tensor: name, dtype: dtypeName)
            }
            guard let count = TensorBounds.elementCount(shape) else {
                throw corrupt("tensor \(name) has invalid shape \(shape)")
            }
            let (begin, end) = (offsets[0], offsets[1])
            let (byteCount, overflow) = count.multipliedReportingOverflow(by: dtype.byteSize)
            guard begin >= 0, begin <= end, !overflow, end - begin == byteCount else {
                throw corrupt("tensor \(name) has data_offsets [\(begin), \(end)) but shape \(shape) of \(dtypeName) needs \(overflow ? "too many" : String(byteCount)) bytes")
            }
            guard end <= dataSize else {
                throw CheckpointError.truncated(
                    path: path, detail: "tensor \(name) ends at byte \(end) of a data section of \(dataSize) bytes")
            }
            ranges.append((begin, end, name))
            // NOTE: the format only aligns the data section to 8 bytes, so an F32
            // tensor after an odd-length F16/BF16 one starts 2-byte aligned.
            tensors[name] = IndexedTensor(
                dtype: dtype, shape: shape, strides: TensorBounds.contiguousStrides(shape),
                byteOffset: dataStart + begin, storageByteCount: byteCount)
        }

        ranges.sort { ($0.begin, $0.end) < ($1.begin, $1.end) }
        for (previous, next) in zip(ranges, ranges.dropFirst()) where next.begin < previous.end {
            throw corrupt("data of tensors \(previous.name) and \(next.name) overlap")
        }
        return (tensors, metadata)
    }

    /// Non-negative integers of a JSON array, or nil for anything else.
    private static func intArray(_ value: Any?) -> [Int]? {
        guard let items = value as? [Any] else { return nil }
        var result: [Int] = []
        for item in items {
            // A fraction such as 1.5 converts to 1 and fails the round trip.
            guard let number = item as? NSNumber else { return nil }
            let integer = number.int64Value
            guard integer >= 0, number.doubleValue == Double(integer) else { return nil }
            result.append(Int(integer))
        }
        return result
    }
}
