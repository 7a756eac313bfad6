// A buffered output file that appears at its path only when complete: bytes go
// to a temporary file in the same directory, which is fsynced and renamed over
// the destination on commit, so readers never see a half-written checkpoint.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

final class AtomicOutputFile {
    let path: String
    private let temporaryPath: String
    private var descriptor: Int32
    private var buffer: [UInt8] = []
    private static let bufferCapacity = 1 << 20
    /// Bytes written so far, buffered or not.
    private(set) var offset = 0

    init(path: String) throws {
        self.path = path
        temporaryPath = "\(path).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))"
        descriptor = open(temporaryPath, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        if descriptor < 0 {
            throw CheckpointError.ioFailed(path: temporaryPath, function: "open", errno: errno)
        }
        buffer.reserveCapacity(Self.bufferCapacity)
    }

    /// Removes the temporary file unless `commit()` ran.
    deinit {
        if descriptor >= 0 {
            close(descriptor)
            unlink(temporaryPath)
        }
    }

    func write(_ bytes: UnsafeRawBufferPointer) throws {
        offset += bytes.count
        if buffer.count + bytes.count <= Self.bufferCapacity {
            buffer.append(contentsOf: bytes)
            return
        }
        try flush()
        if bytes.count >= Self.bufferCapacity {
            try writeAll(bytes)
        } else {
            buffer.append(contentsOf: bytes)
        }
    }

    func write(_ bytes: [UInt8]) throws {
        try bytes.withUnsafeBytes { try write($0) }
    }

    /// Flushes, fsyncs and renames the temporary file to `path`.
    func commit() throws {
        try flush()
        if fsync(descriptor) != 0 {
            throw CheckpointError.ioFailed(path: temporaryPath, function: "fsync", errno: errno)
        }
        let closed = close(descriptor)
        descriptor = -1
        if closed != 0 {
            let code = errno
            unlink(temporaryPath)
            throw CheckpointError.ioFailed(path: temporaryPath, function: "close", errno: code)
        }
        if rename(temporaryPath, path) != 0 {
            let code = errno
            unlink(temporaryPath)
            throw CheckpointError.ioFailed(path: path, function: "rename", errno: code)
        }
    }

    private func flush() throws {
        try buffer.withUnsafeBytes { try writeAll($0) }
        buffer.removeAll(keepingCapacity: true)
    }

    private func writeAll(_ bytes: UnsafeRawBufferPointer) throws {
        var done = 0
        while done < bytes.count {
            let result = systemWrite(descriptor, bytes.baseAddress! + done, bytes.count - done)
            if result < 0 {
                if errno == EINTR { continue }
                throw CheckpointError.ioFailed(path: temporaryPath, function: "write", errno: errno)
            }
            done += result
        }
    }
}

#if canImport(Glibc)
private let systemWrite = Glibc.write
#elseif canImport(Darwin)
private let systemWrite = Darwin.write
#endif
