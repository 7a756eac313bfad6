// A restricted unpickler for the `data.pkl` that torch.save writes for a flat
// state dict (pickle protocol 2; the protocol 4 framing opcodes are accepted
// too). It never imports or calls anything: the few allowed globals are
// recognised by name and interpreted here, and any other opcode or global is
// rejected with its offset. Values follow the CPython pickle machine
// (Lib/pickle.py): a stack, a mark stack and a memo.
//
// Left out: every opcode of protocols 0 and 1 except MARK-based TUPLE, and
// objects other than dicts, lists, tuples, scalars, strings and tensors.

/// A storage named by a persistent id: ('storage', StorageType, key, location, numel).
struct PickledStorage: Equatable {
    let key: String
    /// The storage's dtype in torch's spelling (`bfloat16`, `int64`, ...).
    let dtypeName: String
    let dtype: TensorDType?
    let elementCount: Int
}

/// A tensor from `_rebuild_tensor_v2`: a view into a storage, in elements.
struct PickledTensor {
    let storage: PickledStorage
    let storageOffset: Int
    let shape: [Int]
    let strides: [Int]
}

final class PickleDict {
    var items: [(key: PickleValue, value: PickleValue)] = []
}

final class PickleList {
    var items: [PickleValue] = []
}

indirect enum PickleValue {
    case none
    case bool(Bool)
    case int(Int)
    case float(Double)
    case string(String)
    case tuple([PickleValue])
    case list(PickleList)
    case dict(PickleDict)
    case global(module: String, name: String)
    case storage(PickledStorage)
    case tensor(PickledTensor)
}

struct Unpickler {
    /// Legacy typed storage classes and the dtype each holds.
    static let storageTypes: [String: (name: String, dtype: TensorDType?)] = [
        "FloatStorage": ("float32", .float32),
        "HalfStorage": ("float16", .float16),
        "BFloat16Storage": ("bfloat16", .bfloat16),
        "DoubleStorage": ("float64", nil),
        "LongStorage": ("int64", nil),
        "IntStorage": ("int32", nil),
        "ShortStorage": ("int16", nil),
        "CharStorage": ("int8", nil),
        "ByteStorage": ("uint8", nil),
        "BoolStorage": ("bool", nil),
        "ComplexFloatStorage": ("complex64", nil),
        "ComplexDoubleStorage": ("complex128", nil),
        "UntypedStorage": ("uint8", nil),
    ]

    private static let allowedCallables: Set<String> = [
        "collections OrderedDict",
        "torch._utils _rebuild_tensor_v2",
        "torch._utils _rebuild_parameter",
    ]

    let path: String
    let entryName: String
    let data: UnsafeRawBufferPointer

    private var position = 0
    private var stack: [PickleValue] = []
    private var marks: [Int] = []
    private var memo: [Int: PickleValue] = [:]
    private var storages: [String: PickledStorage] = [:]

    init(path: String, entryName: String, data: UnsafeRawBufferPointer) {
        self.path = path
        self.entryName = entryName
        self.data = data
    }

    /// Runs the pickle to its STOP opcode and returns the top-level object.
    mutating func load() throws -> PickleValue {
        while true {
            let opcodeOffset = position
            let opcode = try readByte()
            switch opcode {
            case 0x80:  // PROTO
                let version = try readByte()
                if version > 5 {
                    throw CheckpointError.unsupportedFeature(path: path, detail: "pickle protocol \(version)")
                }
            case 0x95:  // FRAME: a length prefix that needs no action
                _ = try readBytes(8)
            case 0x2E:  // STOP
                return try pop(opcodeOffset)

            case 0x28:  // MARK
                marks.append(stack.count)
            case 0x7D:  // EMPTY_DICT
                stack.append(.dict(PickleDict()))
            case 0x5D:  // EMPTY_LIST
                stack.append(.list(PickleList()))
            case 0x29:  // EMPTY_TUPLE
                stack.append(.tuple([]))
            case 0x4E:  // NONE
                stack.append(.none)
            case 0x88:  // NEWTRUE
                stack.append(.bool(true))
            case 0x89:  // NEWFALSE
                stack.append(.bool(false))

            case 0x4B:  // BININT1
                stack.append(.int(Int(try readByte())))
            case 0x4D:  // BININT2
                stack.append(.int(try readBytes(2).u16(0)))
            case 0x4A:  // BININT
                stack.append(.int(Int(try readBytes(4).readLE(Int32.self, at: 0))))
            case 0x8A:  // LONG1: little-endian two's complement of n bytes
                stack.append(.int(try readLong1(opcodeOffset)))
            case 0x47:  // BINFLOAT: big-endian IEEE 754 double
                let raw = try readBytes(8).loadUnaligned(as: UInt64.self)
                stack.append(.float(Double(bitPattern: UInt64(bigEndian: raw))))

            case 0x58:  // BINUNICODE
                let length = try readBytes(4).u32(0)
                stack.append(.string(try readString(length)))
            case 0x8C:  // SHORT_BINUNICODE
                let length = Int(try readByte())
                stack.append(.string(try readString(length)))
            case 0x8D:  // BINUNICODE8
                let length = try readBytes(8).u64(0)
                guard length <= UInt64(data.count) else { throw corrupt("string length \(length)", at: opcodeOffset) }
                stack.append(.string(try readString(Int(length))))

            case 0x71:  // BINPUT
                memo[Int(try readByte())] = try top(opcodeOffset)
            case 0x72:  // LONG_BINPUT
                memo[try readBytes(4).u32(0)] = try top(opcodeOffset)
            case 0x94:  // MEMOIZE
                memo[memo.count] = try top(opcodeOffset)
            case 0x68:  // BINGET
                stack.append(try memoValue(Int(try readByte()), opcodeOffset))
            case 0x6A:  // LONG_BINGET
                stack.append(try memoValue(try readBytes(4).u32(0), opcodeOffset))

            case 0x74:  // TUPLE
                stack.append(.tuple(try popToMark(opcodeOffset)))
            case 0x85, 0x86, 0x87:  // TUPLE1, TUPLE2, TUPLE3
                let count = Int(opcode - 0x84)
                guard stack.count >= count else { throw corrupt("stack underflow", at: opcodeOffset) }
                let items = Array(stack.suffix(count))
                stack.removeLast(count)
                stack.append(.tuple(items))

            case 0x63:  // GLOBAL: "module\nname\n"
                let module = try readLine()
                let name = try readLine()
                stack.append(try checkedGlobal(module: module, name: name, at: opcodeOffset))
            case 0x93:  // STACK_GLOBAL
                let nameValue = try pop(opcodeOffset)
                let moduleValue = try pop(opcodeOffset)
                guard case .string(let module) = moduleValue, case .string(let name) = nameValue else {
                    throw corrupt("STACK_GLOBAL without two strings", at: opcodeOffset)
                }
                stack.append(try checkedGlobal(module: module, name: name, at: opcodeOffset))

            case 0x51:  // BINPERSID
                stack.append(try persistentLoad(try pop(opcodeOffset), at: opcodeOffset))
            case 0x52:  // REDUCE
                let arguments = try pop(opcodeOffset)
                let callable = try pop(opcodeOffset)
                stack.append(try reduce(callable, arguments, at: opcodeOffset))
            case 0x62:  // BUILD: only an OrderedDict's `_metadata` state, which is dropped
                _ = try pop(opcodeOffset)
                guard case .dict = try top(opcodeOffset) else {
                    throw unsupported("BUILD on an object other than a dict", at: opcodeOffset)
                }

            case 0x73:  // SETITEM
                let value = try pop(opcodeOffset)
                let key = try pop(opcodeOffset)
                try dictOnTop(opcodeOffset).items.append((key, value))
            case 0x75:  // SETITEMS
                let items = try popToMark(opcodeOffset)
                guard items.count % 2 == 0 else { throw corrupt("SETITEMS with an odd item count", at: opcodeOffset) }
                let dict = try dictOnTop(opcodeOffset)
                for pair in stride(from: 0, to: items.count, by: 2) {
                    dict.items.append((items[pair], items[pair + 1]))
                }
            case 0x61:  // APPEND
                let value = try pop(opcodeOffset)
                try listOnTop(opcodeOffset).items.append(value)
            case 0x65:  // APPENDS
                let items = try popToMark(opcodeOffset)
                try listOnTop(opcodeOffset).items.append(contentsOf: items)

            default:
                throw unsupported("opcode 0x\(opcode < 16 ? "0" : "")\(String(opcode, radix: 16))", at: opcodeOffset)
            }
        }
    }

    // MARK: - Globals and calls

    private func checkedGlobal(module: String, name: String, at offset: Int) throws -> PickleValue {
        let qualified = "\(module) \(name)"
        let isStorage = (module == "torch" || module == "torch.storage") && Self.storageTypes[name] != nil
        guard isStorage || Self.allowedCallables.contains(qualified) else {
            throw unsupported("global '\(qualified)'", at: offset)
        }
        return .global(module: module, name: name)
    }

    /// Resolves ('storage', StorageType, key, location, numel) to a storage,
    /// the same one for every id that names the same key.
    private mutating func persistentLoad(_ id: PickleValue, at offset: Int) throws -> PickleValue {
        guard case .tuple(let fields) = id, fields.count == 5,
              case .string("storage") = fields[0],
              case .global(_, let typeName) = fields[1],
              let storageType = Self.storageTypes[typeName],
              case .string(let key) = fields[2],
              case .string = fields[3],
              case .int(let count) = fields[4], count >= 0
        else {
            throw unsupported("persistent id other than ('storage', type, key, location, numel)", at: offset)
        }
        let storage = PickledStorage(key: key, dtypeName: storageType.name, dtype: storageType.dtype, elementCount: count)
        if let earlier = storages[key], earlier != storage {
            throw corrupt("storage '\(key)' is described twice with different types or sizes", at: offset)
        }
        storages[key] = storage
        return .storage(storage)
    }

    private func reduce(_ callable: PickleValue, _ arguments: PickleValue, at offset: Int) throws -> PickleValue {
        guard case .global(let module, let name) = callable, case .tuple(let args) = arguments else {
            throw unsupported("REDUCE of something other than an allowed global", at: offset)
        }
        switch "\(module) \(name)" {
        case "collections OrderedDict":
            guard args.isEmpty else { throw unsupported("OrderedDict built from arguments", at: offset) }
            return .dict(PickleDict())

        case "torch._utils _rebuild_tensor_v2":
            // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
            guard args.count == 6 || args.count == 7,
                  case .storage(let storage) = args[0],
                  case .int(let storageOffset) = args[1],
                  let shape = Self.intTuple(args[2]),
                  let strides = Self.intTuple(args[3]),
                  shape.count == strides.count
            else {
                throw unsupported("_rebuild_tensor_v2 arguments other than (storage, offset, size, stride, ...)", at: offset)
            }
            return .tensor(PickledTensor(storage: storage, storageOffset: storageOffset, shape: shape, strides: strides))

        case "torch._utils _rebuild_parameter":
            // (data, requires_grad, backward_hooks): a Parameter is read as its tensor.
            guard args.count == 3, case .tensor = args[0] else {
                throw unsupported("_rebuild_parameter arguments other than (tensor, requires_grad, hooks)", at: offset)
            }
            return args[0]

        default:
            throw unsupported("call of global '\(module) \(name)'", at: offset)
        }
    }

    private static func intTuple(_ value: PickleValue) -> [Int]? {
        guard case .tuple(let items) = value else { return nil }
        var result: [Int] = []
        for item in items {
            guard case .int(let number) = item else { return nil }
            result.append(number)
        }
        return result
    }

    // MARK: - Stack and input

    private mutating func pop(_ offset: Int) throws -> PickleValue {
        guard let value = stack.popLast() else { throw corrupt("stack underflow", at: offset) }
        if let mark = marks.last, stack.count < mark { throw corrupt("pop across a MARK", at: offset) }
        return value
    }

    private func top(_ offset: Int) throws -> PickleValue {
        guard let value = stack.last else { throw corrupt("stack underflow", at: offset) }
        return value
    }

    private mutating func popToMark(_ offset: Int) throws -> [PickleValue] {
        guard let mark = marks.popLast(), mark <= stack.count else { throw corrupt("no MARK", at: offset) }
        let items = Array(stack[mark...])
        stack.removeLast(stack.count - mark)
        return items
    }

    private func dictOnTop(_ offset: Int) throws -> PickleDict {
        guard case .dict(let dict) = try top(offset) else { throw corrupt("SETITEM without a dict", at: offset) }
        return dict
    }

    private func listOnTop(_ offset: Int) throws -> PickleList {
        guard case .list(let list) = try top(offset) else { throw corrupt("APPEND without a list", at: offset) }
        return list
    }

    private func memoValue(_ index: Int, _ offset: Int) throws -> PickleValue {
        guard let value = memo[index] else { throw corrupt("memo entry \(index) is not set", at: offset) }
        return value
    }

    private mutating func readByte() throws -> UInt8 {
        guard position < data.count else { throw endOfData() }
        defer { position += 1 }
        return data[position]
    }

    private mutating func readBytes(_ count: Int) throws -> UnsafeRawBufferPointer {
        guard count >= 0, count <= data.count - position else { throw endOfData() }
        defer { position += count }
        return UnsafeRawBufferPointer(rebasing: data[position..<(position + count)])
    }

    private mutating func readString(_ length: Int) throws -> String {
        String(decoding: try readBytes(length), as: UTF8.self)
    }

    private mutating func readLine() throws -> String {
        guard let newline = data[position...].firstIndex(of: 0x0A) else { throw endOfData() }
        let line = try readString(newline - position)
        position += 1
        return line
    }

    private mutating func readLong1(_ offset: Int) throws -> Int {
        let length = Int(try readByte())
        guard length <= 8 else { throw unsupported("LONG1 integer of \(length) bytes", at: offset) }
        let bytes = try readBytes(length)
        var value: UInt64 = 0
        for (index, byte) in bytes.enumerated() { value |= UInt64(byte) << UInt64(8 * index) }
        if length > 0 && length < 8 && bytes[length - 1] & 0x80 != 0 {
            value |= UInt64.max << UInt64(8 * length)  // sign-extend
        }
        return Int(Int64(bitPattern: value))
    }

    // MARK: - Errors

    private func unsupported(_ what: String, at offset: Int) -> CheckpointError {
        .unsupportedPickle(path: path, detail: "\(what) at offset \(offset) of \(entryName)")
    }

    private func corrupt(_ what: String, at offset: Int) -> CheckpointError {
        .corrupt(path: path, detail: "\(entryName): \(what) at offset \(offset)")
    }

    private func endOfData() -> CheckpointError {
        .corrupt(path: path, detail: "\(entryName) ends before its STOP opcode")
    }
}
