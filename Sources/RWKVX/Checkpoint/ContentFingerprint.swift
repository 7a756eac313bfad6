// A fingerprint of tensors' contents that reads only a few pages of each: enough
// to tell two checkpoints of the same shape apart (different seeds or training
// steps), where the index fingerprint cannot, without reading whole weights.
import Foundation

extension Checkpoint {
    /// Bytes sampled from each tensor, in blocks of this size at the start, the end
    /// and two points in between.
    static let fingerprintSampleBytes = 4096

    /// SHA-256 (hex) over the names, dtypes, shapes and sampled bytes of `names`, in
    /// sorted order. Throws for a name that is not in the checkpoint.
    ///
    /// NOTE: a sample, not a full hash: two files that differ only between the sampled
    /// pages of every tensor get the same fingerprint.
    public func contentFingerprint(of names: [String]) throws -> String {
        var hash = SHA256()
        for name in names.sorted() {
            let view = try tensor(name)
            hash.update("\(name)|\(view.dtype.rawValue)|\(view.shape)|")
            var extent = 1
            for (size, stride) in zip(view.shape, view.strides) where size > 0 { extent += (size - 1) * stride }
            let bytes = view.count == 0 ? 0 : extent * view.dtype.byteSize
            let block = Self.fingerprintSampleBytes
            var offsets = [0, bytes / 3, 2 * bytes / 3, max(bytes - block, 0)]
            offsets = Array(Set(offsets)).sorted()
            for offset in offsets {
                let length = min(block, bytes - offset)
                guard length > 0 else { continue }
                hash.update(UnsafeRawBufferPointer(start: view.base + offset, count: length))
            }
        }
        return hash.finalize().map { String(format: "%02x", $0) }.joined()
    }
}
