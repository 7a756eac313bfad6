// Kernel levels against the scalar reference, and the invariances the cluster
// relies on: within one level an output element does not depend on n_tok, on
// the row split or on the thread count.
import CKernels
import RWKVX
import XCTest

final class KernelTests: XCTestCase {
    private var levels: [Int32] { Array(0...rwkvx_cpu_level()) }
    private let dtypes: [rwkvx_dtype] = [RWKVX_DTYPE_F32, RWKVX_DTYPE_F16, RWKVX_DTYPE_BF16, RWKVX_DTYPE_I8]

    override func tearDown() {
        _ = rwkvx_set_level(rwkvx_cpu_level())
        super.tearDown()
    }

    // MARK: - matmul

    func testMatmulMatchesScalar() {
        for dtype in dtypes {
            for (rows, cols, nTok) in [(13, 77, 1), (13, 77, 7), (37, 64, 9), (8, 768, 4), (5, 3, 2)] {
                let weights = Weights(dtype: dtype, rows: rows, cols: cols, seed: UInt64(rows * 1000 + cols))
                let x = randomFloats(nTok * cols, seed: 7)
                let bound = errorBounds(weights, x: x, nTok: nTok)
                let reference = matmul(weights, x: x, nTok: nTok, level: 0)
                XCTAssertGreaterThan(maxAbs(reference), 0.1)
                for level in levels.dropFirst() {
                    let result = matmul(weights, x: x, nTok: nTok, level: level)
                    for i in 0..<result.count {
                        XCTAssertLessThanOrEqual(abs(result[i] - reference[i]), bound[i],
                                                 "dtype \(dtype.rawValue) level \(level) \(rows)x\(cols) n_tok \(nTok) element \(i)")
                    }
                }
            }
        }
    }

    func testMatmulTokenInvariance() {
        let (rows, cols, nTok) = (21, 77, 7)
        for dtype in dtypes {
            let weights = Weights(dtype: dtype, rows: rows, cols: cols, seed: 11)
            let x = randomFloats(nTok * cols, seed: 12)
            for level in levels {
                let batch = matmul(weights, x: x, nTok: nTok, level: level)
                for t in 0..<nTok {
                    let single = matmul(weights, x: Array(x[t * cols..<(t + 1) * cols]), nTok: 1, level: level)
                    XCTAssertEqual(single, Array(batch[t * rows..<(t + 1) * rows]),
                                   "dtype \(dtype.rawValue) level \(level) token \(t)")
                }
            }
        }
    }

    func testMatmulRowSplitInvariance() {
        let (rows, cols, nTok) = (37, 77, 9)
        for dtype in dtypes {
            let weights = Weights(dtype: dtype, rows: rows, cols: cols, seed: 21)
            let x = randomFloats(nTok * cols, seed: 22)
            for level in levels {
                let whole = matmul(weights, x: x, nTok: nTok, level: level)
                for cuts in [[0, 1, 37], [0, 5, 13, 30, 37], [0, 16, 32, 37]] {
                    var pieces = [Float](repeating: .nan, count: nTok * rows)
                    for p in 0..<(cuts.count - 1) {
                        matmulInto(&pieces, weights, x: x, nTok: nTok, rows: cuts[p]..<cuts[p + 1])
                    }
                    XCTAssertEqual(pieces, whole, "dtype \(dtype.rawValue) level \(level) cuts \(cuts)")
                }
            }
        }
    }

    // Packing moves bytes only: over packed panels (one token or register tiles) a
    // row gives the same bits as over its row-major bytes.
    func testPackedLayoutChangesNoBit() {
        for dtype in dtypes where dtype != RWKVX_DTYPE_I8 {
            for (rows, cols, nTok) in [(13, 77, 1), (37, 77, 8), (16, 768, 4), (9, 16, 5)] {
                let weights = Weights(dtype: dtype, rows: rows, cols: cols, seed: UInt64(rows + cols))
                let x = randomFloats(nTok * cols, seed: 61)
                for level in levels {
                    let packed = matmul(weights, x: x, nTok: nTok, level: level)
                    for t in 0..<nTok {
                        var plain = [Float](repeating: .nan, count: rows)
                        weights.bytes.withUnsafeBytes { m in
                            rwkvx_dot_rows(dtype, Array(x[t * cols..<(t + 1) * cols]), m.baseAddress, cols, cols,
                                           &plain, 0, rows)
                        }
                        XCTAssertEqual(Array(packed[t * rows..<(t + 1) * rows]), plain,
                                       "dtype \(dtype.rawValue) level \(level) \(rows)x\(cols) token \(t)")
                    }
                }
            }
        }
    }

    func testPackKeepsEveryElement() {
        let (rows, cols) = (11, 37)
        let weights = Weights(dtype: RWKVX_DTYPE_F32, rows: rows, cols: cols, seed: 62)
        let values = weights.asFloats()
        XCTAssertEqual(weights.packed.count, rows * 48 * 4)
        weights.packed.withUnsafeBytes { raw in
            let packed = raw.bindMemory(to: Float.self)
            var seen = 0
            for r in 0..<rows {
                let panel = r / 8, height = min(8, rows - panel * 8)
                for c in 0..<cols {
                    let index = panel * 8 * 48 + (c / 16) * height * 16 + (r % 8) * 16 + c % 16
                    XCTAssertEqual(packed[index], values[r * cols + c], "row \(r) column \(c)")
                    seen += 1
                }
            }
            XCTAssertEqual(seen, rows * cols)
            XCTAssertEqual(packed.filter { $0 == 0 }.count, packed.count - rows * cols)
        }
    }

    // Input-major products: every level near the scalar one and near a float64 sum,
    // and within a level an output does not depend on n_tok or the row range.
    func testMatmulByColumnsLevelsAndInvariance() {
        for dtype in [RWKVX_DTYPE_F32, RWKVX_DTYPE_F16, RWKVX_DTYPE_BF16] {
            for (rows, cols, nTok) in [(768, 64, 9), (77, 32, 5), (13, 3, 1)] {
                let values = randomFloats(rows * cols, seed: UInt64(90 + rows))
                let w = encode(values, as: dtype)
                var exact = [Float](repeating: 0, count: rows * cols)
                w.withUnsafeBytes { rwkvx_to_f32(dtype, $0.baseAddress, &exact, rows * cols) }
                let x = randomFloats(nTok * cols, seed: 91)

                func run(_ level: Int32, tokens: Range<Int>, rowRange: Range<Int>) -> [Float] {
                    _ = rwkvx_set_level(level)
                    var y = [Float](repeating: .nan, count: nTok * rows)
                    w.withUnsafeBytes { wp in
                        y.withUnsafeMutableBufferPointer { yp in
                            rwkvx_matmul_by_columns(dtype, wp.baseAddress, rows, cols, Array(x[(tokens.lowerBound * cols)...]),
                                                    tokens.count, yp.baseAddress! + tokens.lowerBound * rows, rows,
                                                    rowRange.lowerBound, rowRange.upperBound)
                        }
                    }
                    return y
                }
                let label = "dtype \(dtype.rawValue) \(rows)x\(cols)"
                let reference = run(0, tokens: 0..<nTok, rowRange: 0..<rows)
                for t in 0..<nTok {
                    for r in 0..<rows {
                        var sum = 0.0, magnitude = 0.0
                        for c in 0..<cols {
                            sum += Double(x[t * cols + c]) * Double(exact[c * rows + r])
                            magnitude += abs(Double(x[t * cols + c]) * Double(exact[c * rows + r]))
                        }
                        XCTAssertLessThanOrEqual(abs(Double(reference[t * rows + r]) - sum), 1e-5 * magnitude + 1e-30,
                                                 "\(label) scalar token \(t) row \(r)")
                    }
                }
                for level in levels {
                    let whole = run(level, tokens: 0..<nTok, rowRange: 0..<rows)
                    XCTAssertLessThanOrEqual(maxRelativeDifference(whole, reference), 1e-5, "\(label) level \(level)")
                    for t in 0..<nTok {
                        let single = run(level, tokens: t..<(t + 1), rowRange: 0..<rows)
                        XCTAssertEqual(Array(single[(t * rows)..<((t + 1) * rows)]),
                                       Array(whole[(t * rows)..<((t + 1) * rows)]), "\(label) level \(level) token \(t)")
                    }
                    let cut = rows / 3
                    var pieces = run(level, tokens: 0..<nTok, rowRange: 0..<cut)
                    let rest = run(level, tokens: 0..<nTok, rowRange: cut..<rows)
                    for t in 0..<nTok {
                        for r in cut..<rows { pieces[t * rows + r] = rest[t * rows + r] }
                    }
                    XCTAssertEqual(pieces, whole, "\(label) level \(level) row split at \(cut)")
                }
            }
        }
    }

    func testThreadPoolMatchesOneThread() {
        let (rows, cols, nTok) = (100, 96, 5)
        let weights = Weights(dtype: RWKVX_DTYPE_BF16, rows: rows, cols: cols, seed: 31)
        let x = randomFloats(nTok * cols, seed: 32)
        let onePool = ThreadPool(threadCount: 1)
        let twoPool = ThreadPool(threadCount: 2)
        for level in levels {
            _ = rwkvx_set_level(level)
            let one = pooledMatmul(onePool, weights, x: x, nTok: nTok)
            let two = pooledMatmul(twoPool, weights, x: x, nTok: nTok)
            XCTAssertEqual(one, two, "level \(level)")
            XCTAssertEqual(one, matmul(weights, x: x, nTok: nTok, level: level), "level \(level)")
        }
    }

    // MARK: - dot_rows, wkv7, attention

    func testDotRowsMatchesScalar() {
        let (rows, ld, n, rowBegin, rowEnd) = (13, 80, 77, 2, 13)
        for dtype in dtypes {
            let matrix = Weights(dtype: dtype, rows: rows, cols: ld, seed: 41)
            let a = randomFloats(n, seed: 42)
            let dequantised = matrix.asFloats()
            func run(_ level: Int32) -> [Float] {
                _ = rwkvx_set_level(level)
                var out = [Float](repeating: .nan, count: rowEnd - rowBegin)
                matrix.bytes.withUnsafeBytes { m in
                    rwkvx_dot_rows(dtype, a, m.baseAddress, ld, n, &out, rowBegin, rowEnd)
                }
                return out
            }
            let reference = run(0)
            for level in levels.dropFirst() {
                let result = run(level)
                for r in rowBegin..<rowEnd {
                    var bound: Float = 0
                    for c in 0..<n { bound += abs(dequantised[r * ld + c] * a[c]) }
                    XCTAssertLessThanOrEqual(abs(result[r - rowBegin] - reference[r - rowBegin]), 1e-5 * bound + 1e-30,
                                             "dtype \(dtype.rawValue) level \(level) row \(r)")
                }
            }
        }
    }

    func testWkv7MatchesScalar() {
        for headSize in [64, 20] {
            let nHead = 3
            let size = nHead * headSize
            let (r, k, v, a) = (randomFloats(size, seed: 51), randomFloats(size, seed: 52),
                                randomFloats(size, seed: 53), randomFloats(size, seed: 54).map { abs($0) })
            let decay = randomFloats(size, seed: 55).map { 0.5 + 0.45 * $0 }
            let kk = normalisedPerHead(randomFloats(size, seed: 56), headSize: headSize)
            let initialState = randomFloats(nHead * headSize * headSize, seed: 57)

            func run(_ level: Int32) -> (state: [Float], y: [Float]) {
                _ = rwkvx_set_level(level)
                var state = initialState
                var y = [Float](repeating: .nan, count: size)
                for _ in 0..<2 {
                    rwkvx_wkv7_step(headSize, &state, r, decay, k, v, kk, a, &y, 0, nHead)
                }
                return (state, y)
            }
            let reference = run(0)
            XCTAssertGreaterThan(maxAbs(reference.y), 0.1)
            for level in levels.dropFirst() {
                let result = run(level)
                XCTAssertLessThanOrEqual(maxRelativeDifference(result.state, reference.state), 1e-5,
                                         "state, head size \(headSize), level \(level)")
                XCTAssertLessThanOrEqual(maxRelativeDifference(result.y, reference.y), 1e-5,
                                         "y, head size \(headSize), level \(level)")
            }
        }
    }

    func testTimeMixHeadMatchesScalar() {
        for (n, residual) in [(64, true), (64, false), (20, true)] {
            let inputs = (0..<12).map { randomFloats(n, seed: 70 + UInt64($0)) }

            func run(_ level: Int32) -> [[Float]] {
                _ = rwkvx_set_level(level)
                var (a, k, v, w) = (inputs[0], inputs[1], inputs[2], inputs[3])
                var kk = [Float](repeating: .nan, count: n), y = inputs[4]
                let (a0, kK, kA, first, v0, gate, w0) = (inputs[5], inputs[6], inputs[7], inputs[8], inputs[9],
                                                          inputs[10], inputs[11])
                v0.withUnsafeBufferPointer { v0 in
                    rwkvx_tmix_prepare(n, &a, a0, &k, &kk, kK, kA, &v, first, residual ? v0.baseAddress : nil, gate,
                                       &w, w0)
                }
                rwkvx_tmix_finish(n, &y, inputs[0], k, inputs[6], v, inputs[3], inputs[7], inputs[8], 64e-5)
                return [a, k, kk, v, w, y]
            }
            let reference = run(0)
            for level in levels.dropFirst() {
                let result = run(level)
                for (index, name) in ["a", "k", "kk", "v", "w", "y"].enumerated() {
                    XCTAssertGreaterThan(maxAbs(reference[index]), 0.01, "\(name), n \(n)")
                    XCTAssertLessThanOrEqual(maxRelativeDifference(result[index], reference[index]), 1e-5,
                                             "\(name), n \(n), residual \(residual), level \(level)")
                }
            }
        }
    }

    // A prefill runs rwkvx_wkv7_seq and a decode rwkvx_wkv7_step: the bits must agree.
    func testWkv7SeqMatchesSteps() {
        for headSize in [64, 20] {
            let (nHead, nTok, head) = (3, 9, 1)
            let c = nHead * headSize
            let (r, k, v, a) = (randomFloats(nTok * c, seed: 81), randomFloats(nTok * c, seed: 82),
                                randomFloats(nTok * c, seed: 83), randomFloats(nTok * c, seed: 84).map { abs($0) })
            let decay = randomFloats(nTok * c, seed: 85).map { 0.5 + 0.45 * $0 }
            let kk = normalisedPerHead(randomFloats(nTok * c, seed: 86), headSize: headSize)
            let initialState = randomFloats(nHead * headSize * headSize, seed: 87)
            for level in levels {
                _ = rwkvx_set_level(level)
                var stepped = initialState, sequenced = initialState
                var yStepped = [Float](repeating: 0, count: nTok * c), ySequenced = yStepped
                yStepped.withUnsafeMutableBufferPointer { y in
                    for t in 0..<nTok {
                        let o = t * c
                        rwkvx_wkv7_step(headSize, &stepped, Array(r[o..<o + c]), Array(decay[o..<o + c]),
                                        Array(k[o..<o + c]), Array(v[o..<o + c]), Array(kk[o..<o + c]),
                                        Array(a[o..<o + c]), y.baseAddress! + o, head, head + 1)
                    }
                }
                let o = head * headSize
                sequenced.withUnsafeMutableBufferPointer { state in
                    ySequenced.withUnsafeMutableBufferPointer { y in
                        rwkvx_wkv7_seq(headSize, state.baseAddress! + head * headSize * headSize, nTok, c,
                                       Array(r[o...]), Array(decay[o...]), Array(k[o...]), Array(v[o...]),
                                       Array(kk[o...]), Array(a[o...]), y.baseAddress! + o)
                    }
                }
                XCTAssertEqual(sequenced, stepped, "state, head size \(headSize), level \(level)")
                for t in 0..<nTok {
                    let row = t * c + o
                    XCTAssertEqual(Array(ySequenced[row..<row + headSize]), Array(yStepped[row..<row + headSize]),
                                   "y, head size \(headSize), level \(level), token \(t)")
                }
            }
        }
    }

    func testWkv7HeadSplitInvariance() {
        let (nHead, headSize) = (4, 64)
        let size = nHead * headSize
        let (r, k, v, a) = (randomFloats(size, seed: 61), randomFloats(size, seed: 62),
                            randomFloats(size, seed: 63), randomFloats(size, seed: 64).map { abs($0) })
        let decay = randomFloats(size, seed: 65).map { 0.5 + 0.45 * $0 }
        let kk = normalisedPerHead(randomFloats(size, seed: 66), headSize: headSize)
        let initialState = randomFloats(nHead * headSize * headSize, seed: 67)
        for level in levels {
            _ = rwkvx_set_level(level)
            var whole = initialState, split = initialState
            var yWhole = [Float](repeating: 0, count: size), ySplit = yWhole
            rwkvx_wkv7_step(headSize, &whole, r, decay, k, v, kk, a, &yWhole, 0, nHead)
            rwkvx_wkv7_step(headSize, &split, r, decay, k, v, kk, a, &ySplit, 0, 1)
            rwkvx_wkv7_step(headSize, &split, r, decay, k, v, kk, a, &ySplit, 1, nHead)
            XCTAssertEqual(whole, split, "level \(level)")
            XCTAssertEqual(yWhole, ySplit, "level \(level)")
        }
    }

    func testAttentionMatchesScalar() {
        let cacheRows = 300
        for headSize in [64, 24, 40] {
            let nHead = 3
            let nEmbd = nHead * headSize
            let ld = nEmbd + 3
            // q is scaled up so that the softmax is far from uniform and exp gets a wide range.
            let q = randomFloats(nEmbd, seed: 71).map { $0 * 4 }
            let kFloats = randomFloats(cacheRows * ld, seed: 72)
            let vFloats = randomFloats(cacheRows * ld, seed: 73)
            for dtype in [RWKVX_DTYPE_F32, RWKVX_DTYPE_F16] {
                let kCache = encode(kFloats, as: dtype), vCache = encode(vFloats, as: dtype)
                for ranges in [[0, 50], [0, 5, 10, 23, 40, 50], [7, 8], [0, 300], [3, 40, 100, 117, 250, 299]] {
                    let scoreRows = stride(from: 0, to: ranges.count, by: 2).reduce(0) { $0 + ranges[$1 + 1] - ranges[$1] }
                    func run(_ level: Int32, heads: [Range<Int>] = [0..<3]) -> [Float] {
                        _ = rwkvx_set_level(level)
                        var y = [Float](repeating: .nan, count: nEmbd)
                        var scratch = [Float](repeating: 0, count: nHead * scoreRows)
                        kCache.withUnsafeBytes { k in
                            vCache.withUnsafeBytes { v in
                                for part in heads {
                                    rwkvx_attention(q, k.baseAddress, v.baseAddress, dtype, ld, headSize,
                                                    ranges, ranges.count / 2, 0.3, &scratch, &y,
                                                    part.lowerBound, part.upperBound)
                                }
                            }
                        }
                        return y
                    }
                    let label = "dtype \(dtype.rawValue) head size \(headSize) ranges \(ranges)"
                    let reference = run(0)
                    XCTAssertGreaterThan(maxAbs(reference), 0.01, label)
                    for level in levels {
                        let result = run(level)
                        // Outputs are convex combinations of values in [-1, 1].
                        let difference = zip(result, reference).map { abs($0 - $1) }.max() ?? .nan
                        XCTAssertLessThanOrEqual(difference, 1e-5, "\(label) level \(level)")
                        XCTAssertEqual(run(level, heads: [0..<1, 1..<3]), result, "\(label) level \(level) head split")
                    }
                }
            }
        }
    }

    func testAttentionQueriesMatchOneQuery() {
        let cacheRows = 120
        // Causal blocks of every tile mix, then ragged, unsorted and repeated ends, an
        // empty range, and ends at the last cache row.
        var blocks: [(begin: Int, ends: [Int])] = [1, 2, 3, 4, 5, 7, 8, 9, 16].map { count in
            (begin: 3, ends: (0..<count).map { 3 + 10 + $0 + 1 })
        }
        blocks += [
            (begin: 0, ends: [1]),
            (begin: 0, ends: [1, 2, 3, 4, 5, 6, 7, 8]),
            (begin: 10, ends: [90, 33, 61, 12, 90, 11, 70]),
            (begin: 20, ends: [25, 30, 31, 32, 29]),
            (begin: 7, ends: [7, 9, 8]),
            (begin: 64, ends: [120, 119, 120, 100, 117, 65]),
        ]
        for headSize in [64, 40] {
            let nHead = 3
            let nEmbd = nHead * headSize
            let ld = nEmbd + 3, ldq = nEmbd + 5, ldy = nEmbd + 2
            let maxQueries = blocks.map(\.ends.count).max()!
            // q is scaled up so that the softmax is far from uniform and exp gets a wide range.
            let q = randomFloats(maxQueries * ldq, seed: 81).map { $0 * 4 }
            let kFloats = randomFloats(cacheRows * ld, seed: 82)
            var vFloats = randomFloats(cacheRows * ld, seed: 83)
            // Row 30 is attended by some queries of a block and not by others: a kernel
            // that added it with weight 0 to the others would turn their results into NaN.
            for d in 0..<headSize { vFloats[30 * ld + d] = .infinity }
            vFloats[30 * ld + headSize + 1] = .nan
            for dtype in [RWKVX_DTYPE_F32, RWKVX_DTYPE_F16] {
                let kCache = encode(kFloats, as: dtype), vCache = encode(vFloats, as: dtype)
                for (begin, ends) in blocks {
                    let span = ends.max()! - begin
                    func runBlock(heads: [Range<Int>]) -> [UInt32] {
                        var y = [Float](repeating: .nan, count: ends.count * ldy)
                        var scratch = [Float](repeating: 0, count: max(1, ends.count * span))
                        kCache.withUnsafeBytes { k in
                            vCache.withUnsafeBytes { v in
                                for part in heads {
                                    rwkvx_attention_queries(q, ldq, ends.count, k.baseAddress, v.baseAddress, dtype,
                                                            ld, headSize, begin, ends, 0.3, &scratch, &y, ldy,
                                                            part.lowerBound, part.upperBound)
                                }
                            }
                        }
                        return (0..<ends.count).flatMap { y[$0 * ldy..<$0 * ldy + nEmbd] }.map(\.bitPattern)
                    }
                    func runEachQuery() -> [UInt32] {
                        var y = [Float](repeating: .nan, count: ends.count * nEmbd)
                        var scratch = [Float](repeating: 0, count: max(1, nHead * span))
                        kCache.withUnsafeBytes { k in
                            vCache.withUnsafeBytes { v in
                                for (j, end) in ends.enumerated() {
                                    y.withUnsafeMutableBufferPointer { out in
                                        rwkvx_attention(Array(q[j * ldq..<j * ldq + nEmbd]), k.baseAddress,
                                                        v.baseAddress, dtype, ld, headSize, [begin, end], 1, 0.3,
                                                        &scratch, out.baseAddress! + j * nEmbd, 0, nHead)
                                    }
                                }
                            }
                        }
                        return y.map(\.bitPattern)
                    }
                    for level in levels {
                        _ = rwkvx_set_level(level)
                        let label = "level \(level) dtype \(dtype.rawValue) head size \(headSize) begin \(begin) ends \(ends)"
                        let reference = runEachQuery()
                        XCTAssertGreaterThan(Set(reference).count, ends.count * nEmbd / 2, label)
                        XCTAssertEqual(runBlock(heads: [0..<nHead]), reference, label)
                        XCTAssertEqual(runBlock(heads: [0..<1, 1..<nHead]), reference, "\(label) head split")
                    }
                }
            }
        }
    }

    func testExpMatchesExpf() {
        // Dense over the softmax range [-90, 0], then up to the overflow threshold.
        var x = (0...200_000).map { -90 + Float($0) * 0.00045 }
        x += (0...20_000).map { Float($0) * 0.00443 }
        x += [0, -0.0, 1e-30, -1e-30, 88.72, -87.3, -103, -110, -.infinity, .infinity]
        let reference = x.map { expf($0) }
        for level in levels {
            _ = rwkvx_set_level(level)
            var y = [Float](repeating: .nan, count: x.count)
            rwkvx_exp(x, &y, x.count)
            var worst: Float = 0
            for i in x.indices {
                if reference[i].isInfinite {
                    XCTAssertEqual(y[i], reference[i], "level \(level) x \(x[i])")
                } else if reference[i] >= .leastNormalMagnitude {
                    worst = max(worst, abs(y[i] - reference[i]) / reference[i])
                } else {
                    XCTAssertLessThanOrEqual(abs(y[i] - reference[i]), .leastNormalMagnitude,
                                             "level \(level) x \(x[i]): \(y[i]) against \(reference[i])")
                }
            }
            print("exp level \(level): max relative error \(worst)")
            XCTAssertLessThan(worst, 3e-7, "level \(level)")
            var nan: [Float] = [.nan]
            rwkvx_exp(nan, &nan, 1)
            XCTAssertTrue(nan[0].isNaN, "level \(level)")
        }
    }

    // MARK: - quantisation, levels, test data

    func testQuantizeRoundsHalvesAwayFromZero() {
        let w: [Float] = [1, -0.5, 0.25, 0, 0, 0, 0, 0]
        var q = [Int8](repeating: 99, count: 8)
        var scales = [Float](repeating: .nan, count: 2)
        rwkvx_quantize_i8_rows(w, 2, 4, &q, &scales)
        XCTAssertEqual(scales[0], 1 / 127)
        XCTAssertEqual(Array(q[0..<4]), [127, -64, 32, 0])
        XCTAssertEqual(scales[1], 0)
        XCTAssertEqual(Array(q[4..<8]), [0, 0, 0, 0])
    }

    func testQuantizeErrorWithinHalfStep() {
        let (rows, cols) = (9, 77)
        let w = randomFloats(rows * cols, seed: 81)
        var q = [Int8](repeating: 0, count: rows * cols)
        var scales = [Float](repeating: 0, count: rows)
        rwkvx_quantize_i8_rows(w, rows, cols, &q, &scales)
        for r in 0..<rows {
            let maxAbsRow = w[r * cols..<(r + 1) * cols].map { abs($0) }.max()!
            XCTAssertEqual(scales[r], maxAbsRow / 127, "row \(r)")
            XCTAssertEqual(q[r * cols..<(r + 1) * cols].map { abs(Int($0)) }.max(), 127, "row \(r)")
            for c in 0..<cols {
                let error = abs(Float(q[r * cols + c]) * scales[r] - w[r * cols + c])
                XCTAssertLessThanOrEqual(error, scales[r] * 0.5 * (1 + 1e-5), "row \(r) col \(c)")
            }
        }
    }

    func testSetLevelForcesAndClamps() {
        let best = rwkvx_cpu_level()
        XCTAssertEqual(rwkvx_set_level(Int32(RWKVX_LEVEL_SCALAR.rawValue)), 0)
        XCTAssertEqual(rwkvx_get_level(), 0)
        XCTAssertEqual(rwkvx_set_level(99), best)
        XCTAssertEqual(rwkvx_get_level(), best)
        XCTAssertEqual(rwkvx_set_level(-1), 0)
    }

    func testRandomDataNonDegenerate() {
        let values = randomFloats(1000, seed: 3)
        let mean = values.reduce(0, +) / Float(values.count)
        let variance = values.map { ($0 - mean) * ($0 - mean) }.reduce(0, +) / Float(values.count)
        XCTAssertGreaterThan(variance, 0.2)  // uniform on [-1, 1) has variance 1/3
        XCTAssertLessThan(abs(mean), 0.1)
        XCTAssertNotEqual(randomFloats(10, seed: 1), randomFloats(10, seed: 2))
        for dtype in dtypes {
            let weights = Weights(dtype: dtype, rows: 4, cols: 77, seed: 5).asFloats()
            XCTAssertGreaterThan(Set(weights).count, 50, "dtype \(dtype.rawValue)")
        }
    }

    // MARK: - helpers

    private func matmul(_ weights: Weights, x: [Float], nTok: Int, level: Int32) -> [Float] {
        _ = rwkvx_set_level(level)
        var y = [Float](repeating: .nan, count: nTok * weights.rows)
        matmulInto(&y, weights, x: x, nTok: nTok, rows: 0..<weights.rows)
        return y
    }

    private func matmulInto(_ y: inout [Float], _ weights: Weights, x: [Float], nTok: Int, rows: Range<Int>) {
        weights.packed.withUnsafeBytes { w in
            rwkvx_matmul(weights.dtype, w.baseAddress, weights.scales, weights.rows, weights.cols, x, nTok,
                         &y, weights.rows, rows.lowerBound, rows.upperBound)
        }
    }

    private func pooledMatmul(_ pool: ThreadPool, _ weights: Weights, x: [Float], nTok: Int) -> [Float] {
        var y = [Float](repeating: .nan, count: nTok * weights.rows)
        weights.packed.withUnsafeBytes { w in
            y.withUnsafeMutableBufferPointer { out in
                let wPointer = SendablePointer(mutating: w.baseAddress!.assumingMemoryBound(to: UInt8.self))
                let yPointer = SendablePointer(out.baseAddress!)
                let (dtype, scales, cols, rows) = (weights.dtype, weights.scales, weights.cols, weights.rows)
                pool.parallelFor(rows, alignment: 16) { range in
                    rwkvx_matmul(dtype, wPointer.base, scales, rows, cols, x, nTok, yPointer.base, rows,
                                 range.lowerBound, range.upperBound)
                }
            }
        }
        return y
    }

    // Per-element bound on |level - scalar|: 1e-5 of sum |w x|, since the levels
    // differ only in the order of the additions.
    private func errorBounds(_ weights: Weights, x: [Float], nTok: Int) -> [Float] {
        let w = weights.asFloats()
        var bounds = [Float](repeating: 0, count: nTok * weights.rows)
        for t in 0..<nTok {
            for r in 0..<weights.rows {
                var magnitude: Float = 0
                for c in 0..<weights.cols { magnitude += abs(w[r * weights.cols + c] * x[t * weights.cols + c]) }
                bounds[t * weights.rows + r] = 1e-5 * magnitude * (weights.dtype == RWKVX_DTYPE_I8 ? weights.scales[r] : 1) + 1e-30
            }
        }
        return bounds
    }
}

/// A weight matrix stored in one dtype, with per-row scales for I8.
private struct Weights {
    let dtype: rwkvx_dtype
    let rows: Int
    let cols: Int
    /// Row-major, as stored in a checkpoint.
    let bytes: [UInt8]
    /// The panel layout rwkvx_matmul takes.
    let packed: [UInt8]
    let scales: [Float]

    init(dtype: rwkvx_dtype, rows: Int, cols: Int, seed: UInt64) {
        self.dtype = dtype
        self.rows = rows
        self.cols = cols
        let values = randomFloats(rows * cols, seed: seed)
        if dtype == RWKVX_DTYPE_I8 {
            var q = [Int8](repeating: 0, count: rows * cols)
            var scales = [Float](repeating: 0, count: rows)
            rwkvx_quantize_i8_rows(values, rows, cols, &q, &scales)
            bytes = q.map { UInt8(bitPattern: $0) }
            self.scales = scales
        } else {
            bytes = encode(values, as: dtype)
            scales = []
        }
        var packed = [UInt8](repeating: 0xAA, count: rwkvx_packed_bytes(dtype, rows, cols))
        bytes.withUnsafeBytes { rwkvx_pack_panels(dtype, $0.baseAddress, rows, cols, &packed) }
        self.packed = packed
    }

    /// The stored values as fp32, without the I8 scales.
    func asFloats() -> [Float] {
        var out = [Float](repeating: 0, count: rows * cols)
        if dtype == RWKVX_DTYPE_I8 {
            return bytes.map { Float(Int8(bitPattern: $0)) }
        }
        bytes.withUnsafeBytes { rwkvx_to_f32(dtype, $0.baseAddress, &out, rows * cols) }
        return out
    }
}

/// Uniform floats in [-1, 1) from SplitMix64, the same on every platform.
private func randomFloats(_ count: Int, seed: UInt64) -> [Float] {
    var state = seed &* 0x9E37_79B9_7F4A_7C15 &+ 1
    return (0..<count).map { _ in
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        z ^= z >> 31
        return Float(z >> 40) / Float(1 << 24) * 2 - 1
    }
}

/// Encodes floats as F32, F16 or BF16 (round to nearest even) bytes.
private func encode(_ values: [Float], as dtype: rwkvx_dtype) -> [UInt8] {
    var bytes: [UInt8] = []
    switch dtype {
    case RWKVX_DTYPE_F16:
        for value in values {
            let bits = Float16(value).bitPattern
            bytes += [UInt8(bits & 0xff), UInt8(bits >> 8)]
        }
    case RWKVX_DTYPE_BF16:
        for value in values {
            let bits = value.bitPattern
            let rounded = (bits &+ 0x7fff &+ ((bits >> 16) & 1)) >> 16
            bytes += [UInt8(rounded & 0xff), UInt8(rounded >> 8)]
        }
    default:
        values.withUnsafeBytes { bytes += $0 }
    }
    return bytes
}

private func normalisedPerHead(_ values: [Float], headSize: Int) -> [Float] {
    var out = values
    for h in 0..<(values.count / headSize) {
        let head = h * headSize..<(h + 1) * headSize
        let norm = values[head].map { $0 * $0 }.reduce(0, +).squareRoot()
        for i in head { out[i] = values[i] / norm }
    }
    return out
}

private func maxAbs(_ values: [Float]) -> Float {
    values.map { abs($0) }.max() ?? 0
}

// Largest |a - b| relative to the largest |b|.
private func maxRelativeDifference(_ a: [Float], _ b: [Float]) -> Float {
    zip(a, b).map { abs($0 - $1) }.max()! / max(maxAbs(b), 1e-30)
}
