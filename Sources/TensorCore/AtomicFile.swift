import Foundation

/// A file that could not be written; names the file.
public struct FileWriteError: Error, CustomStringConvertible, LocalizedError {
    public var path: String
    public var reason: String
    public var description: String { "\(path): cannot write: \(reason)" }
    public var errorDescription: String? { description }
    public init(path: String, reason: String) { self.path = path; self.reason = reason }
}

/// Durable, atomic file replacement: the bytes go to a temporary sibling that is flushed to the disk
/// (`fsync`) before it is renamed over the target, and the directory is flushed after the rename. A
/// reader never sees a half-written file; a crash or power cut at any moment leaves either the old
/// file or the new one; a full disk fails the write with `ENOSPC` and leaves the old file in place.
public enum AtomicFile {
    public static func write(_ data: Data, to path: String) throws {
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent().path
        do {
            try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        } catch {
            throw FileWriteError(path: path, reason: (error as NSError).localizedDescription)
        }
        let tmp = temporaryName(for: url)
        let fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw FileWriteError(path: path, reason: String(cString: strerror(errno))) }
        var failure: Int32 = 0
        data.withUnsafeBytes { (raw: UnsafeRawBufferPointer) in
            var offset = 0
            while offset < raw.count {
                let n = Foundation.write(fd, raw.baseAddress! + offset, raw.count - offset)
                if n < 0 {
                    if errno == EINTR { continue }
                    failure = errno; return
                }
                offset += n
            }
        }
        if failure == 0 && fsync(fd) != 0 { failure = errno }
        if close(fd) != 0 && failure == 0 { failure = errno }
        if failure == 0 && rename(tmp, path) != 0 { failure = errno }
        if failure != 0 {
            unlink(tmp)
            throw FileWriteError(path: path, reason: String(cString: strerror(failure)))
        }
        try syncDirectory(dir, for: path)
    }

    /// Makes `path` another name of the existing file `source` (a hard link, so no bytes are copied and
    /// a full disk cannot fail it halfway), replacing whatever `path` was atomically. Where the file
    /// system has no hard links, the bytes are copied with `write(_:to:)`.
    public static func link(_ source: String, to path: String) throws {
        let url = URL(fileURLWithPath: path)
        let tmp = temporaryName(for: url)
        if Foundation.link(source, tmp) != 0 {
            let err = errno
            guard err == EPERM || err == EXDEV || err == ENOTSUP || err == EMLINK else {
                throw FileWriteError(path: path, reason: String(cString: strerror(err)))
            }
            guard let data = FileManager.default.contents(atPath: source) else {
                throw FileWriteError(path: path, reason: "cannot read \(source)")
            }
            try write(data, to: path)
            return
        }
        if rename(tmp, path) != 0 {
            let err = errno
            unlink(tmp)
            throw FileWriteError(path: path, reason: String(cString: strerror(err)))
        }
        try syncDirectory(url.deletingLastPathComponent().path, for: path)
    }

    /// Flushes a directory's entries (the rename) to the disk.
    static func syncDirectory(_ dir: String, for path: String) throws {
        let fd = open(dir.isEmpty ? "." : dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        guard fd >= 0 else { throw FileWriteError(path: path, reason: "cannot open its directory: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        // Some file systems (and some sandboxes) refuse fsync on directories; the rename has happened.
        if fsync(fd) != 0 && errno != EINVAL && errno != EBADF {
            throw FileWriteError(path: path, reason: "syncing its directory: \(String(cString: strerror(errno)))")
        }
    }

    /// A hidden sibling that no other writer picks (process id and a random number).
    static func temporaryName(for url: URL) -> String {
        url.deletingLastPathComponent().appendingPathComponent(
            ".\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
    }
}
