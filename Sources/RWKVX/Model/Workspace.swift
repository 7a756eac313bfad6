// Scratch memory of one forward call and the helpers that split its work over
// the thread pool.
//
// A Stage keeps its workspaces and reuses them, so once the buffers have grown to
// the largest batch seen, the per-token path allocates no fp32 buffers: blocks
// write into these [rows, width] buffers in place.
//
// Every parallel split here hands whole output elements to one thread, and the
// kernels compute an element the same way whatever the split, so results do not
// depend on the thread count or on which sessions share a batch.
import CKernels
import Foundation
/// An fp32 buffer that only grows; 64-byte aligned; contents are undefined after a grow.
final class ScratchBuffer {
    private(set) var base: UnsafeMutablePointer<Float>
    private(set) var capacity: Int

    init() {
        capacity = 16
        base = ScratchBuffer.allocate(capacity)
    }

    deinit { UnsafeMutableRawPointer(base).deallocate() }

    func reserve(_ count: Int) {
        if count <= capacity { return }
        UnsafeMutableRawPointer(base).deallocate()
        capacity = count
        base = ScratchBuffer.allocate(count)
    }

    private static func allocate(_ count: Int) -> UnsafeMutablePointer<Float> {
        UnsafeMutableRawPointer.allocate(byteCount: count * 4, alignment: 64).bindMemory(to: Float.self, capacity: count)
    }
}

/// What a matmul task does to its output rows after the kernel wrote them.
enum MatmulEpilogue {
    case none
    case tanh
    case sigmoid
    /// relu(y)^2, the channel-mix activation.
    case reluSquared
    /// residual[t][r] += y[t][r]; residual is [nTok, rows] like y.
    case addInto(UnsafeMutablePointer<Float>)
}

/// A byte buffer that only grows; 64-byte aligned.
final class ByteScratch {
    private(set) var base: UnsafeMutableRawPointer
    private(set) var capacity: Int

    init() {
        capacity = 64
        base = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
    }

    deinit { base.deallocate() }

    func reserve(_ count: Int) {
        if count <= capacity { return }
        base.deallocate()
        capacity = count
        base = UnsafeMutableRawPointer.allocate(byteCount: count, alignment: 64)
    }
}

/// y = x Wᵀ for x [nTok, cols] and y [nTok, rows], then the epilogue.
struct MatmulTask {
    let matrix: Matrix
    let x: UnsafePointer<Float>
    let y: UnsafeMutablePointer<Float>
    let epilogue: MatmulEpilogue
    /// x quantised for an int8 matrix (rwkvx_quantize_q8_activations), set by prepareMatmuls.
    var quantizedX: UnsafeRawPointer?

    init(_ matrix: Matrix, _ x: UnsafeMutablePointer<Float>, _ y: UnsafeMutablePointer<Float>,
         _ epilogue: MatmulEpilogue = .none) {
        self.matrix = matrix
        self.x = UnsafePointer(x)
        self.y = y
        self.epilogue = epilogue
    }

    /// Runs output rows `rows` for every token.
    func run(rows: Range<Int>, nTok: Int) {
        run(rows: rows, tokens: 0..<nTok)
    }

    /// Runs output rows `rows` for tokens `tokens` only. The kernels compute an
    /// element the same way for any token count, so splitting tokens changes no bit.
    func run(rows: Range<Int>, tokens: Range<Int>) {
        if rows.isEmpty || tokens.isEmpty { return }
        let ld = matrix.rows, nTok = tokens.count
        let y = self.y + tokens.lowerBound * ld
        if let quantizedX {
            let xq = quantizedX + tokens.lowerBound * rwkvx_q8_token_bytes(matrix.cols)
            rwkvx_matmul_q8(matrix.data.assumingMemoryBound(to: Int8.self), matrix.scales, matrix.rows, matrix.cols, xq,
                            nTok, y, ld, rows.lowerBound, rows.upperBound)
        } else {
            matrix.apply(x + tokens.lowerBound * matrix.cols, nTok: nTok, into: y, rows: rows)
        }
        // Row pointers keep these loops free of index arithmetic, so they vectorise.
        let first = rows.lowerBound, width = rows.count
        switch epilogue {
        case .none:
            break
        case .tanh:
            for t in 0..<nTok {
                let out = y + t * ld + first
                rwkvx_tanh(out, out, width)
            }
        case .sigmoid:
            for t in 0..<nTok {
                let out = y + t * ld + first
                rwkvx_sigmoid(out, out, width)
            }
        case .reluSquared:
            for t in 0..<nTok {
                let out = y + t * ld + first
                for i in 0..<width {
                    let positive = max(out[i], 0)
                    out[i] = positive * positive
                }
            }
        case .addInto(let whole):
            let residual = whole + tokens.lowerBound * ld
            for t in 0..<nTok {
                let out = y + t * ld + first, sum = residual + t * ld + first
                for i in 0..<width { sum[i] += out[i] }
            }
        }
    }
}

/// Runs independent matmuls as one parallel region. The rows of all tasks are laid
/// end to end, weighted by the bytes each row reads, and cut into one contiguous
/// share per thread at 16-row boundaries. Inputs of int8 matrices are quantised
/// first, once per distinct input, into `scratch`.
func runMatmuls(_ tasks: [MatmulTask], nTok: Int, pool: ThreadPool?, scratch: ByteScratch? = nil) {
    var tasks = tasks
    // Kept alive until the tasks have run: they read the quantised inputs from it.
    let scratch = scratch ?? ByteScratch()
    defer { withExtendedLifetime(scratch) {} }
    prepareMatmuls(&tasks, nTok: nTok, pool: pool, scratch: scratch)
    let threads = pool?.threadCount ?? 1
    if threads == 1 || tasks.isEmpty {
        for task in tasks { task.run(rows: 0..<task.matrix.rows, nTok: nTok) }
        return
    }
    // More slices than threads, so that a thread the OS holds back leaves its share to the others.
    let shared = UncheckedSendable(tasks)
    let slices = threads * 4
    pool!.parallelFor(slices) { parts in
        for part in parts {
            forEachMatmulSlice(shared.value, part: part, of: slices) { task, rows in task.run(rows: rows, nTok: nTok) }
        }
    }
}

/// Quantises the inputs of the int8 tasks into `scratch`, for callers that run the
/// tasks themselves; `scratch` must outlive the runs.
func prepareMatmuls(_ tasks: inout [MatmulTask], nTok: Int, pool: ThreadPool?, scratch: ByteScratch) {
    if tasks.contains(where: { $0.matrix.dtype == RWKVX_DTYPE_I8 }) {
        quantizeInputs(&tasks, nTok: nTok, pool: pool, scratch: scratch)
    }
}

/// Quantises the input of every int8 task (each distinct input once) and points
/// the tasks at the result.
private func quantizeInputs(_ tasks: inout [MatmulTask], nTok: Int, pool: ThreadPool?, scratch: ByteScratch) {
    var inputs: [(x: UnsafePointer<Float>, cols: Int, offset: Int)] = []
    var total = 0
    for task in tasks where task.matrix.dtype == RWKVX_DTYPE_I8 {
        if !inputs.contains(where: { $0.x == task.x && $0.cols == task.matrix.cols }) {
            inputs.append((task.x, task.matrix.cols, total))
            total += nTok * rwkvx_q8_token_bytes(task.matrix.cols)
        }
    }
    scratch.reserve(total)
    let base = UncheckedSendable(scratch.base)
    for input in inputs {
        let stride = rwkvx_q8_token_bytes(input.cols)
        let x = UncheckedSendable(input.x), cols = input.cols, offset = input.offset
        forEachChunk(nTok, pool: pool, minimumPerThread: 16) { tokens in
            rwkvx_quantize_q8_activations(x.value + tokens.lowerBound * cols, tokens.count, cols,
                                          base.value + offset + tokens.lowerBound * stride)
        }
    }
    for i in tasks.indices where tasks[i].matrix.dtype == RWKVX_DTYPE_I8 {
        let input = inputs.first { $0.x == tasks[i].x && $0.cols == tasks[i].matrix.cols }!
        tasks[i].quantizedX = UnsafeRawPointer(scratch.base + input.offset)
    }
}

/// Calls `body` with the row range of each task that share `part` of `parts` owns.
func forEachMatmulSlice(_ tasks: [MatmulTask], part: Int, of parts: Int, _ body: (MatmulTask, Range<Int>) -> Void) {
    let block = 16
    var total = 0
    for task in tasks {
        let rowCost = max(1, task.matrix.byteCount / max(task.matrix.rows, 1))
        total += (task.matrix.rows + block - 1) / block * block * rowCost
    }
    let low = total / parts * part + min(part, total % parts)
    let high = part == parts - 1 ? total : total / parts * (part + 1) + min(part + 1, total % parts)
    var start = 0
    for task in tasks {
        let rowCost = max(1, task.matrix.byteCount / max(task.matrix.rows, 1))
        let blockCost = rowCost * block
        let blocks = (task.matrix.rows + block - 1) / block
        // blocks whose first byte falls in [low, high)
        func firstBlock(atOrAfter position: Int) -> Int {
            if position <= start { return 0 }
            return min(blocks, (position - start + blockCost - 1) / blockCost)
        }
        let first = firstBlock(atOrAfter: low)
        let end = part == parts - 1 ? blocks : firstBlock(atOrAfter: high)
        if first < end {
            body(task, (first * block)..<min(end * block, task.matrix.rows))
        }
        start += blocks * blockCost
    }
}

/// A value that may cross into pool threads. Audited uses: the pointers inside
/// point to buffers that outlive the parallel region, and each thread writes only
/// the elements of its own share.
struct UncheckedSendable<Value>: @unchecked Sendable {
    let value: Value
    init(_ value: Value) { self.value = value }
}

/// Runs `body` over contiguous chunks of [0, count): split over the pool when there
/// are at least `minimumPerThread` items per thread, else in one call.
func forEachChunk(_ count: Int, pool: ThreadPool?, minimumPerThread: Int = 1,
                  _ body: @Sendable (Range<Int>) -> Void) {
    guard let pool, pool.threadCount > 1, count >= 2 * minimumPerThread else {
        if count > 0 { body(0..<count) }
        return
    }
    pool.parallelFor(count, alignment: 1, body)
}

/// Scratch buffers for one forward call of a batch of `rows` tokens, and the
/// per-session pointers of the block being run.
///
/// Audited `@unchecked Sendable`: one forward call owns a workspace at a time
/// (Stage hands them out under a lock), and the parallel regions that read it
/// from pool threads write disjoint rows, heads or sessions of its buffers.
final class Workspace: @unchecked Sendable {
    let config: ModelConfig
    private(set) var rows = 0

    /// Session s owns rows `segments[s]`; `rowSession[t]` is the session of row t.
    private(set) var segments: [Range<Int>] = []
    private(set) var rowSession: [Int] = []

    // [rows, C] activations
    let normed = ScratchBuffer()       // layer-norm output of the block input
    let mixR = ScratchBuffer(), mixW = ScratchBuffer(), mixK = ScratchBuffer()
    let mixV = ScratchBuffer(), mixA = ScratchBuffer(), mixG = ScratchBuffer()  // token-shift mixes
    let r = ScratchBuffer(), k = ScratchBuffer(), v = ScratchBuffer()   // projections (q, k, v in attention)
    let decay = ScratchBuffer()        // w: decay LoRA output, then the decay itself
    let rate = ScratchBuffer()         // a: in-context learning rate
    let gate = ScratchBuffer()         // g: output gate
    let valueGate = ScratchBuffer()    // value-residual LoRA output
    let kk = ScratchBuffer()           // normalised removal key
    let y = ScratchBuffer()            // time-mix or attention output before the output projection
    let projection = ScratchBuffer()   // output of the last projection before the residual add

    // [rows, rank] LoRA hidden activations and [rows, F] channel-mix hidden
    let loraDecay = ScratchBuffer(), loraRate = ScratchBuffer()
    let loraGate = ScratchBuffer(), loraValue = ScratchBuffer()
    let hidden = ScratchBuffer()

    /// Attention softmax scratch: `scoreStride` floats per pool thread.
    let scores = ScratchBuffer()
    private(set) var scoreStride = 0
    /// Heads per attention kernel call: one group of heads per thread.
    var attentionGroupHeads = 1

    // Per-session pointers into the states of the block being run (valid while pinned).
    var wkvState: [UnsafeMutablePointer<Float>?] = []
    var attPrev: [UnsafeMutablePointer<Float>?] = []
    var ffnPrev: [UnsafeMutablePointer<Float>?] = []
    var kCache: [UnsafeRawPointer?] = []
    var vCache: [UnsafeRawPointer?] = []
    var cacheDType: [rwkvx_dtype] = []

    // Per-session attention plan of a sparse block: decode ranges, or the prefill's
    // cache rows before the new tokens and whether it is a short sequence.
    var attentionRanges: [[Int]] = []
    var cacheRowsBefore: [Int] = []
    var shortSequence: [Bool] = []
    /// Cache rows when the session's prefill call began (before its first piece).
    var callStartRows: [Int] = []
    /// The prefill call each session's rows belong to; nil = the rows are the whole call.
    var pieces: [PrefillPiece?] = []
    /// The batch rows in attention kernel calls (decode rows alone, prefill rows in blocks).
    var attentionBlocks: [AttentionBlock] = []

    /// Reused containers, kept here so that their storage is reused across calls.
    var tasks: [MatmulTask] = []
    /// The token-shift mixes of the block being run: mix vector and output buffer.
    var shiftMixes: [(FloatVector, UnsafeMutablePointer<Float>)] = []
    var rwkvLayers: [RWKVLayerState] = []
    var sparseLayers: [SparseLayerState] = []

    init(config: ModelConfig) {
        self.config = config
    }

    /// Sizes every buffer for sessions of `tokenCounts` tokens.
    func prepare(tokenCounts: [Int], pieces: [PrefillPiece?], threads: Int) {
        let c = config.nEmbd
        rows = tokenCounts.reduce(0, +)
        segments.removeAll(keepingCapacity: true)
        rowSession.removeAll(keepingCapacity: true)
        var row = 0
        for (s, n) in tokenCounts.enumerated() {
            segments.append(row..<(row + n))
            for _ in 0..<n { rowSession.append(s) }
            row += n
        }
        for buffer in [normed, mixR, mixW, mixK, mixV, mixA, mixG, r, k, v, decay, rate, gate, valueGate, kk, y,
                       projection] {
            buffer.reserve(rows * c)
        }
        loraDecay.reserve(rows * max(config.loraDecay, 1))
        loraRate.reserve(rows * max(config.loraA, 1))
        loraGate.reserve(rows * max(config.loraGate, 1))
        loraValue.reserve(rows * max(config.loraValue, 1))
        hidden.reserve(rows * config.ffnSize)

        let sessions = tokenCounts.count
        if wkvState.count != sessions {
            wkvState = Array(repeating: nil, count: sessions)
            attPrev = wkvState
            ffnPrev = wkvState
            kCache = Array(repeating: nil, count: sessions)
            vCache = kCache
            cacheDType = Array(repeating: RWKVX_DTYPE_F32, count: sessions)
            attentionRanges = Array(repeating: [], count: sessions)
            cacheRowsBefore = Array(repeating: 0, count: sessions)
            shortSequence = Array(repeating: false, count: sessions)
            callStartRows = cacheRowsBefore
        }
        self.pieces = pieces
        reserveScores(1, threads: threads)
    }

    /// Makes room for `stride` attention scores per thread.
    func reserveScores(_ stride: Int, threads: Int) {
        if stride > scoreStride { scoreStride = stride }
        scores.reserve(scoreStride * threads)
    }

    /// Quantised activations of int8 matmuls.
    let quantized = ByteScratch()

    /// Runs the queued matmul tasks as one parallel region and clears the queue.
    func runQueuedMatmuls(pool: ThreadPool?) {
        runMatmuls(tasks, nTok: rows, pool: pool, scratch: quantized)
        tasks.removeAll(keepingCapacity: true)
    }
}
