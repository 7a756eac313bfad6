// Selection of the best-ranked candidate tokens for top-k and top-p without
// sorting the whole vocabulary: quickselect partitions (expected linear time)
// move the kept tokens to the front, and only those are sorted afterwards.
// Ranking: higher weight first, lower id first on equal weights, which is a
// strict total order, so the kept set is the same as with a full sort.

enum CandidateSelection {
    @inline(__always)
    static func ranksBefore(_ a: Int32, _ b: Int32, _ weights: UnsafeBufferPointer<Float>) -> Bool {
        let weightA = weights[Int(a)]
        let weightB = weights[Int(b)]
        return weightA > weightB || (weightA == weightB && a < b)
    }

    /// Partitions `ids[lower..<upper]` around a median-of-three pivot. Returns the
    /// pivot's final index `p` (ids in `lower..<p` rank before it, the rest after)
    /// and the weight sum of `ids[lower..<p]`.
    static func partition(
        _ ids: UnsafeMutableBufferPointer<Int32>, _ lower: Int, _ upper: Int,
        _ weights: UnsafeBufferPointer<Float>
    ) -> (pivot: Int, sumBefore: Double) {
        // Median of three, moved to the end.
        let middle = lower + (upper - lower) / 2
        let last = upper - 1
        if ranksBefore(ids[middle], ids[lower], weights) { ids.swapAt(middle, lower) }
        if ranksBefore(ids[last], ids[lower], weights) { ids.swapAt(last, lower) }
        if ranksBefore(ids[middle], ids[last], weights) { ids.swapAt(middle, last) }

        let pivot = ids[last]
        var store = lower
        var sumBefore: Double = 0
        for index in lower..<last where ranksBefore(ids[index], pivot, weights) {
            sumBefore += Double(weights[Int(ids[index])])
            ids.swapAt(index, store)
            store += 1
        }
        ids.swapAt(store, last)
        return (store, sumBefore)
    }

    /// Moves the `count` best-ranked ids to the front of `ids`, in no particular order.
    static func selectTop(_ count: Int, _ ids: UnsafeMutableBufferPointer<Int32>, _ weights: UnsafeBufferPointer<Float>) {
        var lower = 0
        var upper = ids.count
        while lower < upper, count > lower, count < upper {
            let (pivot, _) = partition(ids, lower, upper, weights)
            if pivot == count { return }
            if pivot > count { upper = pivot } else { lower = pivot + 1 }
        }
    }

    /// Moves the shortest best-ranked prefix whose weight sum reaches `target`
    /// to the front of `ids`, in no particular order, and returns its length
    /// (all of `ids` when rounding keeps the total below `target`).
    static func selectNucleus(target: Double, _ ids: UnsafeMutableBufferPointer<Int32>, _ weights: UnsafeBufferPointer<Float>) -> Int {
        var lower = 0
        var upper = ids.count
        // Invariant: ids[0..<lower] are in the nucleus and sum to `accumulated` < target.
        var accumulated: Double = 0
        while lower < upper {
            let (pivot, sumBefore) = partition(ids, lower, upper, weights)
            if accumulated + sumBefore >= target {
                upper = pivot
                continue
            }
            accumulated += sumBefore + Double(weights[Int(ids[pivot])])
            if accumulated >= target { return pivot + 1 }
            lower = pivot + 1
        }
        return max(lower, 1)
    }
}
