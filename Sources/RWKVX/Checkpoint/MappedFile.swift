// A read-only memory map of a whole file. Nothing is read at open: the kernel
// pages bytes in when they are first touched, so a pipeline stage that reads
// only its own layers' tensors never reads the rest of a checkpoint.
//
// NOTE: if another process truncates the file while it is mapped, touching a
// page past the new end raises SIGBUS. Checkpoints are expected to be immutable
// while served.
#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

public final class MappedFile: @unchecked Sendable {
    public let path: String
    /// The file's bytes; empty (with a nil base address) for an empty file.
    public let bytes: UnsafeRawBufferPointer

    public var size: Int { bytes.count }

    /// Maps `path` read-only. Throws `.fileNotFound` when it does not exist and
    /// `.ioFailed` (with errno and the failing function) for every other error.
    public init(path: String) throws {
        self.path = path

        // Checked before open, which would wait forever on a pipe with no writer.
        var pathInfo = stat()
        if stat(path, &pathInfo) == 0 && (pathInfo.st_mode & S_IFMT) != S_IFREG {
            throw CheckpointError.notRegularFile(path: path)
        }

        let fd = open(path, O_RDONLY | O_CLOEXEC)
        if fd < 0 {
            let code = errno
            if code == ENOENT { throw CheckpointError.fileNotFound(path: path) }
            throw CheckpointError.ioFailed(path: path, function: "open", errno: code)
        }
        // The mapping keeps the file referenced after the descriptor is closed.
        defer { close(fd) }

        var info = stat()
        if fstat(fd, &info) != 0 {
            throw CheckpointError.ioFailed(path: path, function: "fstat", errno: errno)
        }
        if (info.st_mode & S_IFMT) != S_IFREG {
            throw CheckpointError.notRegularFile(path: path)
        }

        let length = Int(info.st_size)
        if length == 0 {
            bytes = UnsafeRawBufferPointer(start: nil, count: 0)
            return
        }
        guard let address = mmap(nil, length, PROT_READ, MAP_PRIVATE, fd, 0),
              address != MAP_FAILED
        else {
            throw CheckpointError.ioFailed(path: path, function: "mmap", errno: errno)
        }
        bytes = UnsafeRawBufferPointer(start: UnsafeRawPointer(address), count: length)
    }

    deinit {
        if let base = bytes.baseAddress {
            munmap(UnsafeMutableRawPointer(mutating: base), bytes.count)
        }
    }

    /// Unmaps from this process the whole file pages in [pointer, pointer + count), for
    /// bytes copied elsewhere at load. A later read faults them back in from the page
    /// cache, so the contents never change. Ranges outside the mapping are ignored.
    func release(_ pointer: UnsafeRawPointer, count: Int) {
        guard let base = bytes.baseAddress, count > 0 else { return }
        let start = Int(bitPattern: pointer), end = start + count
        let mapStart = Int(bitPattern: base), mapEnd = mapStart + size
        guard start >= mapStart, end <= mapEnd else { return }
        let page = Int(sysconf(Int32(_SC_PAGESIZE)))
        let first = (start + page - 1) / page * page, last = end / page * page
        if first < last {
            _ = madvise(UnsafeMutableRawPointer(bitPattern: first), last - first, MADV_DONTNEED)
        }
    }

    /// The bytes in `range`, or nil when any part of it lies outside the file.
    func slice(offset: Int, count: Int) -> UnsafeRawBufferPointer? {
        guard offset >= 0, count >= 0, offset <= size, count <= size - offset else { return nil }
        if count == 0 { return UnsafeRawBufferPointer(start: bytes.baseAddress, count: 0) }
        return UnsafeRawBufferPointer(rebasing: bytes[offset..<(offset + count)])
    }
}
