// Encodes the data.pkl of a flat state dict as CPython's pickler does at
// protocol 2 for torch.save: every new string, tuple and global is memoized
// with BINPUT/LONG_BINPUT, and repeats of the same global or string are
// fetched with BINGET/LONG_BINGET.

struct StateDictPickle {
    private var bytes: [UInt8] = []
    private var memoCount = 0
    private var memoized: [String: Int] = [:]

    mutating func encode(views: [PthWriter.View], storages: [PthWriter.Storage], keys: [Int: Int]) -> [UInt8] {
        bytes = [0x80, 2]  // PROTO 2
        bytes.append(0x7D)  // EMPTY_DICT
        put()
        if !views.isEmpty { bytes.append(0x28) }  // MARK
        for view in views {
            let storage = storages[view.storage]
            string(view.name)
            global("torch._utils", "_rebuild_tensor_v2")

            bytes.append(0x28)  // MARK: arguments of _rebuild_tensor_v2
            bytes.append(0x28)  // MARK: persistent id
            string("storage", memoize: true)
            global("torch", storageTypeName(storage.dtype))
            string(String(keys[view.storage]!), memoize: true)
            string("cpu", memoize: true)
            int(storage.elementCount)
            bytes.append(0x74)  // TUPLE
            put()
            bytes.append(0x51)  // BINPERSID

            int(view.storageOffset)
            tuple(view.shape)
            tuple(view.strides)
            bytes.append(0x89)  // NEWFALSE: requires_grad
            global("collections", "OrderedDict")
            bytes.append(0x29)  // EMPTY_TUPLE
            bytes.append(0x52)  // REDUCE: backward_hooks = OrderedDict()
            put()
            bytes.append(0x74)  // TUPLE
            put()
            bytes.append(0x52)  // REDUCE
            put()
        }
        if !views.isEmpty { bytes.append(0x75) }  // SETITEMS
        bytes.append(0x2E)  // STOP
        return bytes
    }

    private func storageTypeName(_ dtype: TensorDType) -> String {
        switch dtype {
        case .float32: return "FloatStorage"
        case .float16: return "HalfStorage"
        case .bfloat16: return "BFloat16Storage"
        }
    }

    @discardableResult
    private mutating func put() -> Int {
        let index = memoCount
        memoCount += 1
        if index < 256 {
            bytes += [0x71, UInt8(index)]  // BINPUT
        } else {
            bytes.append(0x72)  // LONG_BINPUT
            bytes.appendLE(UInt32(index))
        }
        return index
    }

    private mutating func get(_ index: Int) {
        if index < 256 {
            bytes += [0x68, UInt8(index)]  // BINGET
        } else {
            bytes.append(0x6A)  // LONG_BINGET
            bytes.appendLE(UInt32(index))
        }
    }

    /// Emits a string; with `memoize`, repeats of the same text reuse one memo slot.
    private mutating func string(_ text: String, memoize: Bool = false) {
        if memoize, let index = memoized["s:" + text] {
            get(index)
            return
        }
        let utf8 = Array(text.utf8)
        bytes.append(0x58)  // BINUNICODE
        bytes.appendLE(UInt32(utf8.count))
        bytes += utf8
        let index = put()
        if memoize { memoized["s:" + text] = index }
    }

    private mutating func global(_ module: String, _ name: String) {
        let key = "g:\(module) \(name)"
        if let index = memoized[key] {
            get(index)
            return
        }
        bytes.append(0x63)  // GLOBAL
        bytes += Array("\(module)\n\(name)\n".utf8)
        memoized[key] = put()
    }

    private mutating func int(_ value: Int) {
        switch value {
        case 0...0xFF:
            bytes += [0x4B, UInt8(value)]  // BININT1
        case 0...0xFFFF:
            bytes.append(0x4D)  // BININT2
            bytes.appendLE(UInt16(value))
        case Int(Int32.min)...Int(Int32.max):
            bytes.append(0x4A)  // BININT
            bytes.appendLE(Int32(value))
        default:
            // LONG1: the shortest little-endian two's complement that keeps the sign.
            var encoded: [UInt8] = []
            var rest = value
            repeat {
                encoded.append(UInt8(truncatingIfNeeded: rest))
                rest >>= 8
            } while !(rest == 0 && encoded.last! & 0x80 == 0) && !(rest == -1 && encoded.last! & 0x80 != 0)
            bytes += [0x8A, UInt8(encoded.count)]
            bytes += encoded
        }
    }

    private mutating func tuple(_ values: [Int]) {
        if values.isEmpty {
            bytes.append(0x29)  // EMPTY_TUPLE, never memoized
            return
        }
        if values.count > 3 { bytes.append(0x28) }  // MARK
        for value in values { int(value) }
        switch values.count {
        case 1: bytes.append(0x85)  // TUPLE1
        case 2: bytes.append(0x86)  // TUPLE2
        case 3: bytes.append(0x87)  // TUPLE3
        default: bytes.append(0x74)  // TUPLE
        }
        put()
    }
}
