// Memory for building protoc-c message structs from Swift before packing.
// Everything allocated here is freed together when the arena goes away, after
// `protobuf_c_message_pack` has copied it into the output bytes.

final class CArena {
    private var allocations: [UnsafeMutableRawPointer] = []

    deinit {
        for allocation in allocations { allocation.deallocate() }
    }

    /// Uninitialised storage for `count` values of T (at least one).
    func allocate<T>(_ type: T.Type, count: Int) -> UnsafeMutablePointer<T> {
        let raw = UnsafeMutableRawPointer.allocate(
            byteCount: max(1, count) * MemoryLayout<T>.stride, alignment: MemoryLayout<T>.alignment)
        allocations.append(raw)
        return raw.bindMemory(to: T.self, capacity: max(1, count))
    }

    /// A message struct set up by its generated `..._init()` function.
    func message<T>(_ initialize: (UnsafeMutablePointer<T>) -> Void) -> UnsafeMutablePointer<T> {
        let pointer = allocate(T.self, count: 1)
        initialize(pointer)
        return pointer
    }

    /// A NUL-terminated copy of `string`.
    func string(_ string: String) -> UnsafeMutablePointer<CChar> {
        let utf8 = Array(string.utf8)
        let pointer = allocate(CChar.self, count: utf8.count + 1)
        for (index, byte) in utf8.enumerated() { pointer[index] = CChar(bitPattern: byte) }
        pointer[utf8.count] = 0
        return pointer
    }

    /// A copy of `values`, or nil when empty (protobuf-c reads nothing then).
    func array<T>(_ values: [T]) -> UnsafeMutablePointer<T>? {
        guard !values.isEmpty else { return nil }
        let pointer = allocate(T.self, count: values.count)
        pointer.initialize(from: values, count: values.count)
        return pointer
    }

    /// An array of message pointers for a repeated message field.
    func pointers<T>(_ values: [UnsafeMutablePointer<T>]) -> UnsafeMutablePointer<UnsafeMutablePointer<T>?>? {
        array(values.map { Optional($0) })
    }
}
