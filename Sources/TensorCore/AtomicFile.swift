import Foundation

/// A file that could not be written; names the file.
public struct FileWriteError: Error, CustomStringConvertible, LocalizedError {
    public var path: String
    public var reason: String
    public var description: String { "\(path): cannot write: \(reason)" }
    public var errorDescription: String? { description }
}

/// Atomic file replacement: write a temporary sibling, then rename it over the target, so a reader
/// never sees a half-written file and an interrupted write leaves the old one intact.
public enum AtomicFile {
    public static func write(_ data: Data, to path: String) throws {
        let url = URL(fileURLWithPath: path)
        let dir = url.deletingLastPathComponent()
        let tmp = dir.appendingPathComponent(".\(url.lastPathComponent).tmp-\(getpid())-\(UInt32.random(in: 0...UInt32.max))")
        do {
            try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
            try data.write(to: tmp)
        } catch {
            try? FileManager.default.removeItem(at: tmp)
            throw FileWriteError(path: path, reason: (error as NSError).localizedDescription)
        }
        if rename(tmp.path, url.path) != 0 {
            let reason = String(cString: strerror(errno))
            try? FileManager.default.removeItem(at: tmp)
            throw FileWriteError(path: path, reason: reason)
        }
    }
}
