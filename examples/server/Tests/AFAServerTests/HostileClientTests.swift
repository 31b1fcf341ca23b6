import AFA
@testable import AFAServer
import Foundation
import Hummingbird
import HummingbirdTesting
import Logging
import XCTest

/// What broken and hostile clients send, over a real socket: bytes that are not HTTP, bodies cut short,
/// images that declare 10¹⁰ pixels, a progressive-JPEG bomb, connections that stall. Each gets a 4xx
/// answer (a stalled connection is closed), never a crash, and good requests sent alongside all succeed.
final class HostileClientTests: XCTestCase {
    /// A checkpoint file of the tiny model and a server config with small limits and a 1 s idle timeout.
    func makeConfig() throws -> (ServerConfig, String) {
        let path = try ServerTests.checkpointFile()
        var config = ServerConfig(checkpoint: path)
        config.port = 0
        config.maxBodyBytes = 1 << 20
        config.maxPixels = 1 << 18
        config.idleTimeoutSeconds = 1
        config.maxQueue = 256
        return (config, path)
    }

    func testHostileClientsGetErrorsAndGoodRequestsAllSucceed() async throws {
        let (config, path) = try makeConfig()
        defer { try? FileManager.default.removeItem(atPath: path) }
        let app = try buildApplication(config: config, logger: Logger(label: "test"))
        let good = try ImageCodec.encodePNG(ServerTests.picture())
        try await app.test(.live) { client in
            let port = try XCTUnwrap(client.port)
            func post(_ body: [UInt8], type: String = "image/png", declaredLength: Int? = nil) -> [UInt8] {
                Array("POST /v1/segment HTTP/1.1\r\nHost: test\r\nContent-Type: \(type)\r\nContent-Length: \(declaredLength ?? body.count)\r\n\r\n".utf8) + body
            }
            // Not HTTP at all.
            var rng = SystemRandomNumberGenerator()
            let noise = (0..<4096).map { _ in UInt8.random(in: 0...255, using: &rng) }
            let r1 = await RawClient.exchange(port: port, [noise])
            XCTAssertTrue(r1.hasPrefix("HTTP/1.1 400"), String(r1.prefix(80)))
            // A request line and headers of absurd size.
            let longHeader = Array("GET /health HTTP/1.1\r\nHost: t\r\nX-Pad: \(String(repeating: "a", count: 200_000))\r\n\r\n".utf8)
            let r2 = await RawClient.exchange(port: port, [longHeader])
            XCTAssertTrue(r2.hasPrefix("HTTP/1.1 400"), String(r2.prefix(80)))
            // A body cut short: Content-Length promises more than arrives before the client stops sending.
            let r3 = await RawClient.exchange(port: port, [post(Array(good.prefix(100)), declaredLength: good.count)])
            XCTAssertTrue(r3.hasPrefix("HTTP/1.1 400"), String(r3.prefix(80)))
            // A PNG declaring 100,000 × 100,000 pixels, a JPEG declaring 65,500 × 60,000: refused from the header.
            let r4 = await RawClient.exchange(port: port, [post(Self.pngDeclaring(width: 100_000, height: 100_000))])
            XCTAssertTrue(r4.hasPrefix("HTTP/1.1 413"), String(r4.prefix(200)))
            let r5 = await RawClient.exchange(port: port, [post(try Self.jpegDeclaring(width: 65500, height: 60000), type: "image/jpeg")])
            XCTAssertTrue(r5.hasPrefix("HTTP/1.1 413"), String(r5.prefix(200)))
            // A progressive JPEG whose last scan repeats 600 times (each repeat is a full decoding pass).
            let r6 = await RawClient.exchange(port: port, [post(try Self.scanBomb(), type: "image/jpeg")])
            XCTAssertTrue(r6.hasPrefix("HTTP/1.1 400") && r6.contains("scans"), String(r6.prefix(300)))
            // A body over the limit that declares no length (chunked): 413 once the limit is passed.
            let chunk = [UInt8](repeating: 7, count: 64 << 10)
            var chunked = Array("POST /v1/segment HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n".utf8)
            for _ in 0..<20 { chunked += Array("10000\r\n".utf8) + chunk + Array("\r\n".utf8) }
            chunked += Array("0\r\n\r\n".utf8)
            let r7 = await RawClient.exchange(port: port, [chunked])
            XCTAssertTrue(r7.hasPrefix("HTTP/1.1 413"), String(r7.prefix(200)))

            // Stalled clients: 32 connections that send half a request line and then nothing. Good requests
            // are served meanwhile, and the idle timeout (1 s) closes the stalled ones.
            let stalled = (0..<32).map { _ in RawClient.openStalled(port: port, Array("POST /v1/segment HTTP/1.1\r\nHost: t\r\nContent-Le".utf8)) }
            let during = await RawClient.exchange(port: port, [post([UInt8](good))])
            XCTAssertTrue(during.hasPrefix("HTTP/1.1 200"), String(during.prefix(80)))
            try await Task.sleep(for: .seconds(2.5))
            let closed = stalled.filter { RawClient.isClosedByPeer($0) }.count
            stalled.forEach { if $0 >= 0 { close($0) } }
            XCTAssertEqual(closed, 32, "the idle timeout closes stalled connections")

            // Mixed load: rounds of 48 requests at once, every other one bad in a different way; every good one
            // succeeds, every bad one gets a 4xx, and memory after five more rounds stays where the first left it.
            let bad: [[UInt8]] = [post(Array("not an image".utf8)), post(Self.pngDeclaring(width: 100_000, height: 100_000)),
                                  post(Array(good.prefix(good.count / 2))), post(try Self.scanBomb(), type: "image/jpeg")]
            var rssAfterFirst = 0.0
            for round in 0..<6 {
                let answers = await withTaskGroup(of: (Bool, String).self) { group in
                    for i in 0..<48 {
                        let isGood = i % 2 == 0
                        let bytes = isGood ? post([UInt8](good)) : bad[(i / 2) % bad.count]
                        group.addTask { (isGood, await RawClient.exchange(port: port, [bytes])) }
                    }
                    var out: [(Bool, String)] = []
                    for await a in group { out.append(a) }
                    return out
                }
                let goodAnswers = answers.filter(\.0).map(\.1)
                XCTAssertEqual(goodAnswers.filter { $0.hasPrefix("HTTP/1.1 200") }.count, 24, goodAnswers.map { String($0.prefix(40)) }.joined(separator: " | "))
                for (_, a) in answers.filter({ !$0.0 }) { XCTAssertTrue(a.hasPrefix("HTTP/1.1 4"), String(a.prefix(80))) }
                if round == 0 { rssAfterFirst = residentMegabytes() }
            }
            let rssAfterAll = residentMegabytes()
            print("hostile mixed load: RSS \(rssAfterFirst) MB after the first round of 48, \(rssAfterAll) MB after six")
            // A decoded 100,000² image alone would be 30 GB; the bound only needs to tell "bounded" from "not".
            XCTAssertLessThan(rssAfterAll - rssAfterFirst, 64, "memory grows with hostile requests")
            // Still healthy. (Raw connections throughout: the test client's own connection is idle for longer
            // than the 1 s timeout and is closed by the server meanwhile.)
            let health = await RawClient.exchange(port: port, [Array("GET /health HTTP/1.1\r\nHost: t\r\n\r\n".utf8)])
            XCTAssertTrue(health.hasPrefix("HTTP/1.1 200"), String(health.prefix(80)))
        }
    }

    /// The signature and an IHDR chunk (with its CRC) declaring the given size, then nothing.
    static func pngDeclaring(width: UInt32, height: UInt32) -> [UInt8] {
        var ihdr = Array("IHDR".utf8)
        for v in [width, height] { ihdr += [UInt8(v >> 24), UInt8((v >> 16) & 0xFF), UInt8((v >> 8) & 0xFF), UInt8(v & 0xFF)] }
        ihdr += [8, 2, 0, 0, 0]
        var crc: UInt32 = 0xFFFF_FFFF
        for b in ihdr {
            crc ^= UInt32(b)
            for _ in 0..<8 { crc = (crc & 1) != 0 ? 0xEDB8_8320 ^ (crc >> 1) : crc >> 1 }
        }
        crc = ~crc
        return [0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13] + ihdr
            + [UInt8(crc >> 24), UInt8((crc >> 16) & 0xFF), UInt8((crc >> 8) & 0xFF), UInt8(crc & 0xFF)]
    }

    /// A small real JPEG whose frame header is edited to declare another size.
    static func jpegDeclaring(width: Int, height: Int) throws -> [UInt8] {
        var b = [UInt8](try ImageCodec.encodeJPEG(ServerTests.picture(width: 16, height: 16)))
        var i = 2
        while i + 9 < b.count {
            let marker = b[i + 1], length = Int(b[i + 2]) << 8 | Int(b[i + 3])
            if marker == 0xC0 {
                b[i + 5] = UInt8(height >> 8); b[i + 6] = UInt8(height & 0xFF)
                b[i + 7] = UInt8(width >> 8); b[i + 8] = UInt8(width & 0xFF)
                return b
            }
            i += 2 + length
        }
        throw AFAError.invalidInput("no frame header")
    }

    /// A progressive JPEG with its last scan repeated 600 times.
    static func scanBomb() throws -> [UInt8] {
        let b = [UInt8](try ImageCodec.encodeJPEG(ServerTests.picture(width: 32, height: 32), progressive: true))
        let lastSOS = (0..<(b.count - 1)).last { b[$0] == 0xFF && b[$0 + 1] == 0xDA }!
        let scan = Array(b[lastSOS..<(b.count - 2)])
        return Array(b.dropLast(2)) + Array([[UInt8]](repeating: scan, count: 600).joined()) + [0xFF, 0xD9]
    }
}

/// This process's resident memory (VmRSS), MB.
func residentMegabytes() -> Double {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
    return (Double(line.split(whereSeparator: { $0 == " " || $0 == "\t" }).dropFirst().first ?? "0") ?? 0) / 1024
}

/// A client that speaks raw bytes over TCP (what no HTTP library would send), on threads of its own so
/// blocking calls never occupy the server's executors.
enum RawClient {
    static func connect(port: Int) -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_port = in_port_t(UInt16(port).bigEndian)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        let rc = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        var tv = timeval(tv_sec: 20, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, socklen_t(MemoryLayout<timeval>.size))
        if rc != 0 { close(fd); return -1 }
        return fd
    }

    /// Sends `chunks`, stops sending (half-close), and returns everything the server answers until it closes
    /// (or 20 s pass); "" when it closes without answering.
    static func exchange(port: Int, _ chunks: [[UInt8]]) async -> String {
        await withCheckedContinuation { (done: CheckedContinuation<String, Never>) in
            Thread {
                let fd = connect(port: port)
                guard fd >= 0 else { return done.resume(returning: "connect failed") }
                defer { close(fd) }
                for c in chunks {
                    var off = 0
                    while off < c.count {
                        let n = c.withUnsafeBytes { send(fd, $0.baseAddress! + off, c.count - off, Int32(MSG_NOSIGNAL)) }
                        if n <= 0 { break }
                        off += n
                    }
                }
                shutdown(fd, Int32(SHUT_WR))
                var out = [UInt8](), buf = [UInt8](repeating: 0, count: 65536)
                while true {
                    let n = recv(fd, &buf, buf.count, 0)
                    if n <= 0 { break }
                    out += buf[0..<n]
                }
                done.resume(returning: String(decoding: out, as: UTF8.self))
            }.start()
        }
    }

    /// Opens a connection, sends `prefix` and leaves it open.
    static func openStalled(port: Int, _ prefix: [UInt8]) -> Int32 {
        let fd = connect(port: port)
        if fd >= 0 { _ = prefix.withUnsafeBytes { send(fd, $0.baseAddress!, prefix.count, Int32(MSG_NOSIGNAL)) } }
        return fd
    }

    /// Whether the server has closed the connection (a read returns end of file or a reset at once).
    static func isClosedByPeer(_ fd: Int32) -> Bool {
        guard fd >= 0 else { return false }
        var buf = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buf, buf.count, Int32(MSG_DONTWAIT))
            if n > 0 { continue }   // an error response before the close
            return n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)
        }
    }
}
