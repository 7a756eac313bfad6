// The index both readers build when a checkpoint opens: where each tensor's
// element 0 sits in the file and how to walk it. Entries are validated when
// they are made, so turning one into a TensorView cannot fail.

struct IndexedTensor: Equatable {
    let dtype: TensorDType
    let shape: [Int]
    /// Strides in elements.
    let strides: [Int]
    /// Absolute file offset of element 0.
    let byteOffset: Int
    /// Size of the storage (pth) or data range (safetensors) the tensor lies in.
    let storageByteCount: Int
}

enum TensorBounds {
    /// Element count of `shape`, or nil when a dimension is negative or the
    /// product overflows.
    static func elementCount(_ shape: [Int]) -> Int? {
        var count = 1
        for dimension in shape {
            guard dimension >= 0 else { return nil }
            let (product, overflow) = count.multipliedReportingOverflow(by: dimension)
            if overflow { return nil }
            count = product
        }
        return count
    }

    /// One past the last element a strided view reaches, counted from the
    /// storage start, or nil on a negative value or overflow. An empty view
    /// reaches no element, so its end is its offset.
    static func endElement(offset: Int, shape: [Int], strides: [Int]) -> Int? {
        guard offset >= 0, shape.count == strides.count else { return nil }
        guard let count = elementCount(shape) else { return nil }
        if count == 0 { return offset }
        var last = offset
        for (dimension, stride) in zip(shape, strides) {
            guard stride >= 0 else { return nil }
            let (step, overflow) = (dimension - 1).multipliedReportingOverflow(by: stride)
            if overflow { return nil }
            let (sum, overflow2) = last.addingReportingOverflow(step)
            if overflow2 { return nil }
            last = sum
        }
        return last == Int.max ? nil : last + 1
    }

    /// Row-major strides of a contiguous tensor.
    static func contiguousStrides(_ shape: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        var step = 1
        for dimension in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[dimension] = step
            step *= max(shape[dimension], 1)
        }
        return strides
    }
}
