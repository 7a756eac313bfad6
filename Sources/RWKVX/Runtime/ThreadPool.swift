// A persistent pool of worker threads for data-parallel kernel calls.
//
// parallelFor cuts [0, count) into a fixed set of contiguous chunks (up to
// `chunksPerThread` per thread, boundaries on multiples of `alignment`) and every
// thread, the caller included, claims chunks from a shared counter until none
// are left. A worker that the OS has descheduled therefore never holds up a call:
// the caller takes its chunks, and only waits for chunks already started.
// Kernels keep an element's arithmetic independent of the row split and of the
// thread that runs it, so results are the same for any thread count.
//
// Idle workers spin for a bounded time and then sleep on a condition variable:
// a pure spin-wait collapses throughput when another process runs on the other
// cores. Calls do not allocate. Nested or concurrent calls on one pool are not
// supported and stop with a precondition failure.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import CKernels
import Synchronization

/// A raw pointer that may cross threads. Audited use: a parallelFor body writes
/// only the elements of its own chunk, and the buffer outlives the call.
public struct SendablePointer<Pointee>: @unchecked Sendable {
    public let base: UnsafeMutablePointer<Pointee>

    public init(_ base: UnsafeMutablePointer<Pointee>) {
        self.base = base
    }

    public init(mutating base: UnsafePointer<Pointee>) {
        self.base = UnsafeMutablePointer(mutating: base)
    }
}

/// Splits [0, count) into `parts` contiguous chunks whose boundaries fall on
/// multiples of `alignment` (the last chunk takes the remainder), so a kernel's
/// row blocks are never cut. Chunks may be empty when count is small.
public func alignedChunk(_ index: Int, of parts: Int, count: Int, alignment: Int = 1) -> Range<Int> {
    precondition(parts > 0 && index >= 0 && index < parts && count >= 0 && alignment > 0)
    let blocks = (count + alignment - 1) / alignment
    let begin = min(count, (blocks * index / parts) * alignment)
    let end = index == parts - 1 ? count : min(count, (blocks * (index + 1) / parts) * alignment)
    return begin..<end
}

public final class ThreadPool: Sendable {
    /// Threads that run chunks, the caller included.
    public let threadCount: Int
    private let shared: PoolShared
    private let workers: [pthread_t]

    /// The number of online processors, at least 1.
    public static var defaultThreadCount: Int {
        max(1, Int(sysconf(Int32(_SC_NPROCESSORS_ONLN))))
    }

    /// Starts `threadCount - 1` workers. An idle worker spins for up to
    /// `spinMicroseconds` before it sleeps until the next call.
    public init(threadCount: Int = ThreadPool.defaultThreadCount, spinMicroseconds: Int = 100) {
        precondition(threadCount >= 1, "threadCount must be at least 1, got \(threadCount)")
        self.threadCount = threadCount
        let shared = PoolShared(threadCount: threadCount, spinNanoseconds: UInt64(max(0, spinMicroseconds)) * 1000)
        self.shared = shared

        var workers: [pthread_t] = []
        for index in 1..<threadCount {
            let context = Unmanaged.passRetained(WorkerContext(shared: shared, index: index)).toOpaque()
            var thread = pthread_t()
            let status = pthread_create(&thread, nil, { raw in
                let context = Unmanaged<WorkerContext>.fromOpaque(raw!).takeRetainedValue()
                context.shared.workerLoop(index: context.index)
                return nil
            }, context)
            // The pool cannot do its job without its threads, and callers sized it.
            precondition(status == 0, "pthread_create failed for worker \(index): errno \(status)")
            workers.append(thread)
        }
        self.workers = workers
    }

    deinit {
        shared.stop()
        for thread in workers { pthread_join(thread, nil) }
    }

    /// Runs `body` on contiguous chunks of [0, count) spread over the threads and
    /// returns when all are done. Chunk boundaries are multiples of `alignment`;
    /// empty chunks are skipped. `body` must only touch data of its own chunk.
    public func parallelFor(_ count: Int, alignment: Int = 1, _ body: @Sendable (Range<Int>) -> Void) {
        parallelFor(count, alignment: alignment) { range, _ in body(range) }
    }

    /// Like parallelFor, and passes the index (0..<threadCount, 0 for the caller) of
    /// the thread running the chunk, for per-thread scratch memory.
    public func parallelFor(_ count: Int, alignment: Int = 1, _ body: @Sendable (Range<Int>, Int) -> Void) {
        precondition(count >= 0 && alignment > 0)
        if threadCount == 1 || count <= alignment {
            if count > 0 { body(0..<count, 0) }
            return
        }
        withoutActuallyEscaping(body) { escapable in
            shared.run(count: count, alignment: alignment, body: escapable)
        }
    }
}

private final class WorkerContext {
    let shared: PoolShared
    let index: Int

    init(shared: PoolShared, index: Int) {
        self.shared = shared
        self.index = index
    }
}

/// Chunks per thread of one call: enough that a thread that starts late or runs
/// slow leaves its share to the others, few enough that claiming costs nothing.
private let chunksPerThread = 4

/// State shared by the caller and the workers.
///
/// Audited `@unchecked Sendable`: `body`, `count`, `alignment` and `chunks` are
/// written by the calling thread only while no chunk of a job is claimable (before
/// `ticket` moves to the new generation, after every chunk has completed), and a
/// thread reads them only after it claimed a chunk of the current generation,
/// which keeps the job from completing. The atomics' sequentially consistent
/// operations order those writes with the reads. The pthread mutex and condition
/// variables live in memory allocated once and freed in deinit.
private final class PoolShared: @unchecked Sendable {
    let threadCount: Int
    let spinNanoseconds: UInt64

    // The current job; see the type's comment for who may touch these.
    var body: (@Sendable (Range<Int>, Int) -> Void)?
    var count = 0
    var alignment = 1
    var chunks = 0

    /// Bumped once per job; workers look for chunks when it differs from the last one seen.
    let generation = Atomic<Int>(0)
    /// The claim counter of the current job: its generation (low 24 bits) << 40,
    /// its chunk count << 20, and the next unclaimed chunk index. Keeping all three
    /// in one word lets a thread tell with one compare-exchange whether its claim
    /// is a real chunk of the job it saw. Claims past the last chunk add at most one
    /// per thread, so the index never reaches the count field.
    let ticket = Atomic<Int>(0)
    /// Chunks of the current job that have finished.
    let completed = Atomic<Int>(0)
    /// Workers asleep on `workReady`, and whether the caller sleeps on `workDone`.
    let sleepingWorkers = Atomic<Int>(0)
    let callerSleeping = Atomic<Bool>(false)
    let stopping = Atomic<Bool>(false)
    let busy = Atomic<Bool>(false)

    let mutex: UnsafeMutablePointer<pthread_mutex_t>
    let workReady: UnsafeMutablePointer<pthread_cond_t>
    let workDone: UnsafeMutablePointer<pthread_cond_t>

    init(threadCount: Int, spinNanoseconds: UInt64) {
        self.threadCount = threadCount
        self.spinNanoseconds = spinNanoseconds
        mutex = .allocate(capacity: 1)
        workReady = .allocate(capacity: 1)
        workDone = .allocate(capacity: 1)
        pthread_mutex_init(mutex, nil)
        pthread_cond_init(workReady, nil)
        pthread_cond_init(workDone, nil)
    }

    deinit {
        pthread_cond_destroy(workDone)
        pthread_cond_destroy(workReady)
        pthread_mutex_destroy(mutex)
        workDone.deallocate()
        workReady.deallocate()
        mutex.deallocate()
    }

    func run(count: Int, alignment: Int, body: @escaping @Sendable (Range<Int>, Int) -> Void) {
        let (exchanged, _) = busy.compareExchange(expected: false, desired: true, ordering: .acquiring)
        precondition(exchanged, "ThreadPool.parallelFor does not support nested or concurrent calls")

        // Publish the job, open its chunks, then wake the workers.
        let blocks = (count + alignment - 1) / alignment
        self.body = body
        self.count = count
        self.alignment = alignment
        self.chunks = min(blocks, threadCount * chunksPerThread, 0xF_FFFF)
        completed.store(0, ordering: .sequentiallyConsistent)
        let job = generation.load(ordering: .sequentiallyConsistent) + 1
        ticket.store((job & 0xFF_FFFF) << 40 | chunks << 20, ordering: .sequentiallyConsistent)
        generation.store(job, ordering: .sequentiallyConsistent)
        if sleepingWorkers.load(ordering: .sequentiallyConsistent) > 0 {
            pthread_mutex_lock(mutex)
            pthread_cond_broadcast(workReady)
            pthread_mutex_unlock(mutex)
        }

        // The caller claims chunks like any worker.
        runChunks(job: job, thread: 0)

        // Wait for chunks other threads started: spin, then sleep until the last one signals.
        let total = chunks
        if !spin(until: { completed.load(ordering: .sequentiallyConsistent) == total }) {
            pthread_mutex_lock(mutex)
            callerSleeping.store(true, ordering: .sequentiallyConsistent)
            while completed.load(ordering: .sequentiallyConsistent) != total {
                pthread_cond_wait(workDone, mutex)
            }
            callerSleeping.store(false, ordering: .sequentiallyConsistent)
            pthread_mutex_unlock(mutex)
        }

        // Drop the job's reference, so the closure is unretained when withoutActuallyEscaping checks it.
        self.body = nil
        busy.store(false, ordering: .releasing)
    }

    func workerLoop(index: Int) {
        var seen = 0
        while true {
            // Wait for a new generation: spin, then sleep.
            if !spin(until: { generation.load(ordering: .sequentiallyConsistent) != seen || stopping.load(ordering: .relaxed) }) {
                pthread_mutex_lock(mutex)
                sleepingWorkers.add(1, ordering: .sequentiallyConsistent)
                while generation.load(ordering: .sequentiallyConsistent) == seen
                    && !stopping.load(ordering: .sequentiallyConsistent) {
                    pthread_cond_wait(workReady, mutex)
                }
                sleepingWorkers.subtract(1, ordering: .sequentiallyConsistent)
                pthread_mutex_unlock(mutex)
            }
            if stopping.load(ordering: .sequentiallyConsistent) { return }
            seen = generation.load(ordering: .sequentiallyConsistent)
            runChunks(job: seen, thread: index)
        }
    }

    /// Claims and runs chunks of job `job` until none are left (or a newer job started).
    private func runChunks(job: Int, thread: Int) {
        while true {
            let current = ticket.load(ordering: .sequentiallyConsistent)
            guard current >> 40 == job & 0xFF_FFFF else { return }
            let total = (current >> 20) & 0xF_FFFF, chunk = current & 0xF_FFFF
            guard chunk < total else { return }
            let (claimed, _) = ticket.compareExchange(expected: current, desired: current + 1,
                                                      ordering: .sequentiallyConsistent)
            if !claimed { continue }
            // A claim below the job's chunk count keeps the job open, so its fields are valid.
            runChunk(chunk, of: total, thread: thread)

            // The last chunk to finish wakes a sleeping caller.
            if completed.add(1, ordering: .sequentiallyConsistent).newValue == total
                && callerSleeping.load(ordering: .sequentiallyConsistent) {
                pthread_mutex_lock(mutex)
                pthread_cond_signal(workDone)
                pthread_mutex_unlock(mutex)
            }
        }
    }

    // Kept out of line so the thread's reference to the closure ends before it
    // reports completion.
    @inline(never)
    private func runChunk(_ chunk: Int, of total: Int, thread: Int) {
        let range = alignedChunk(chunk, of: total, count: count, alignment: alignment)
        if !range.isEmpty, let body { body(range, thread) }
    }

    /// Spins until `condition` is true or the spin time runs out, and returns whether it became true.
    private func spin(until condition: () -> Bool) -> Bool {
        if condition() { return true }
        if spinNanoseconds == 0 { return false }
        let deadline = monotonicNanoseconds() + spinNanoseconds
        while true {
            for _ in 0..<32 {
                rwkvx_spin_pause()
                if condition() { return true }
            }
            if monotonicNanoseconds() >= deadline { return condition() }
        }
    }

    func stop() {
        pthread_mutex_lock(mutex)
        stopping.store(true, ordering: .sequentiallyConsistent)
        pthread_cond_broadcast(workReady)
        pthread_mutex_unlock(mutex)
    }
}

private func monotonicNanoseconds() -> UInt64 {
    var now = timespec()
    clock_gettime(CLOCK_MONOTONIC, &now)
    return UInt64(now.tv_sec) * 1_000_000_000 + UInt64(now.tv_nsec)
}
