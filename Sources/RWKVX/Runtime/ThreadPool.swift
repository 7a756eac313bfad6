// Placeholder until the persistent pool lands: runs everything on the caller.
public final class ThreadPool: @unchecked Sendable {
    public let threadCount: Int
    public init(threads: Int = 1) { threadCount = 1 }
    public func parallelRows(_ count: Int, alignment: Int, _ body: (Range<Int>) -> Void) { body(0..<count) }
}

/// A pointer handed to pool threads; each thread writes a disjoint part.
public struct UnsafeSendable<T>: @unchecked Sendable {
    public let value: T
    public init(_ value: T) { self.value = value }
}
