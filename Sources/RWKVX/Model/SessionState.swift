// Everything a session carries between calls: the state of each block it runs.
// A pipeline stage holds the slice of its own blocks; slices merge back into a
// whole state. The byte form is what stages send for snapshots and failover.
import Foundation

public struct SessionState: Sendable, Equatable {
    /// States of RWKV blocks, by checkpoint layer index.
    public var rwkv: [Int: RWKVLayerState] = [:]
    /// States of sparse blocks, by checkpoint index.
    public var sparse: [Int: SparseLayerState] = [:]

    public init() {}

    /// Creates a fresh state for `blocks`.
    public init(config: ModelConfig, blocks: [BlockID]) {
        for block in blocks {
            switch block {
            case .rwkv(let i): rwkv[i] = RWKVLayerState(config: config)
            case .sparse(let j): sparse[j] = SparseLayerState(config: config)
            }
        }
    }

    /// Creates a fresh state for the whole model, including RWKV blocks that never run
    /// (they stay zero, as in the reference state).
    public init(config: ModelConfig) {
        self.init(config: config, blocks: (0..<config.nRWKVLayer).map { .rwkv($0) }
                  + (0..<config.nSparseLayer).map { .sparse($0) })
    }

    public var blocks: [BlockID] {
        rwkv.keys.sorted().map { .rwkv($0) } + sparse.keys.sorted().map { .sparse($0) }
    }

    /// Returns the part of this state that belongs to `blocks`.
    public func slice(_ blocks: [BlockID]) -> SessionState {
        var out = SessionState()
        for block in blocks {
            switch block {
            case .rwkv(let i): out.rwkv[i] = rwkv[i]
            case .sparse(let j): out.sparse[j] = sparse[j]
            }
        }
        return out
    }

    /// Takes over every block state of `other`.
    public mutating func merge(_ other: SessionState) {
        rwkv.merge(other.rwkv) { _, new in new }
        sparse.merge(other.sparse) { _, new in new }
    }

    /// Bytes of KV cache held, for memory accounting.
    public var cacheBytes: Int {
        sparse.values.reduce(0) { $0 + $1.cacheBytes }
    }
}

// MARK: - Byte form
//
// Little-endian: magic "RWKVXST2", u32 n_embd, u32 head_size, u32 block count, then
// per block: u8 kind (0 rwkv, 1 sparse), u32 index, and for rwkv the fp32 arrays
// att_x_prev [C], wkv [H*N*N], ffn_x_prev [C]; for sparse u8 cache dtype (0 fp32,
// 1 fp16), u32 rows, k_cache [rows*C] and v_cache [rows*C] in that dtype (fp16 as
// IEEE half bits), then fp32 ffn_x_prev [C].
// Version 1 ("RWKVXST1") is read too: it has no dtype byte and fp32 caches.

public struct StateFormatError: Error, CustomStringConvertible {
    public let message: String
    public var description: String { "invalid session state bytes: \(message)" }
}

extension SessionState {
    static let magic = Array("RWKVXST2".utf8)
    static let magicVersion1 = Array("RWKVXST1".utf8)

    public func serialized(config: ModelConfig) -> [UInt8] {
        var out = SessionState.magic
        func u32(_ v: Int) { withUnsafeBytes(of: UInt32(v).littleEndian) { out += $0 } }
        func floats(_ a: [Float]) { a.withUnsafeBytes { out += $0 } }
        func halves(_ a: [UInt16]) { a.withUnsafeBytes { out += $0 } }
        u32(config.nEmbd)
        u32(config.headSize)
        u32(rwkv.count + sparse.count)
        for i in rwkv.keys.sorted() {
            let s = rwkv[i]!
            out.append(0)
            u32(i)
            floats(s.attXPrev)
            floats(s.wkv)
            floats(s.ffnXPrev)
        }
        for j in sparse.keys.sorted() {
            let s = sparse[j]!
            out.append(1)
            u32(j)
            out.append(s.cacheDType == .fp16 ? 1 : 0)
            u32(s.rows(nEmbd: config.nEmbd))
            switch s.cacheDType {
            case .fp32:
                floats(s.kCache)
                floats(s.vCache)
            case .fp16:
                halves(s.kCacheHalf)
                halves(s.vCacheHalf)
            }
            floats(s.ffnXPrev)
        }
        return out
    }

    public init(serialized bytes: [UInt8], config: ModelConfig) throws {
        self.init()
        var offset = 0
        func take(_ n: Int) throws -> ArraySlice<UInt8> {
            guard n >= 0, offset + n <= bytes.count else {
                throw StateFormatError(message: "truncated at byte \(offset) (needed \(n) more of \(bytes.count))")
            }
            defer { offset += n }
            return bytes[offset..<(offset + n)]
        }
        func u32() throws -> Int {
            let s = try take(4)
            return Int(s.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << (8 * UInt32($1.offset)) })
        }
        func floats(_ n: Int) throws -> [Float] {
            let s = try take(n * 4)
            return s.withUnsafeBytes { raw in
                (0..<n).map { Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 4, as: UInt32.self))) }
            }
        }
        func halves(_ n: Int) throws -> [UInt16] {
            let s = try take(n * 2)
            return s.withUnsafeBytes { raw in
                (0..<n).map { UInt16(littleEndian: raw.loadUnaligned(fromByteOffset: $0 * 2, as: UInt16.self)) }
            }
        }
        let magic = Array(try take(8))
        guard magic == SessionState.magic || magic == SessionState.magicVersion1 else {
            throw StateFormatError(message: "bad magic")
        }
        let version1 = magic == SessionState.magicVersion1
        let c = try u32(), n = try u32()
        guard c == config.nEmbd, n == config.headSize else {
            throw StateFormatError(message: "state is for n_embd \(c), head_size \(n); model has \(config.nEmbd), \(config.headSize)")
        }
        let count = try u32()
        for _ in 0..<count {
            let kind = try take(1).first!
            let index = try u32()
            switch kind {
            case 0:
                guard index < config.nRWKVLayer else { throw StateFormatError(message: "rwkv block \(index) out of range") }
                var s = RWKVLayerState(config: config)
                s.attXPrev = try floats(c)
                s.wkv = try floats(config.nHead * n * n)
                s.ffnXPrev = try floats(c)
                rwkv[index] = s
            case 1:
                guard index < config.nSparseLayer else { throw StateFormatError(message: "sparse block \(index) out of range") }
                var s = SparseLayerState(config: config)
                let dtypeCode = version1 ? 0 : try take(1).first!
                let rows = try u32()
                switch dtypeCode {
                case 0:
                    s.setStored(dtype: .fp32, kCache: try floats(rows * c), vCache: try floats(rows * c), kHalf: [], vHalf: [])
                case 1:
                    s.setStored(dtype: .fp16, kCache: [], vCache: [], kHalf: try halves(rows * c), vHalf: try halves(rows * c))
                default:
                    throw StateFormatError(message: "unknown KV cache dtype \(dtypeCode) in sparse block \(index)")
                }
                s.ffnXPrev = try floats(c)
                sparse[index] = s
            default:
                throw StateFormatError(message: "unknown block kind \(kind) at byte \(offset - 1)")
            }
        }
        guard offset == bytes.count else { throw StateFormatError(message: "\(bytes.count - offset) trailing bytes") }
    }
}
