import Foundation
import ImageIO
import XCTest

final class CodecTests: XCTestCase {
    var dir: String!

    override func setUpWithError() throws {
        dir = NSTemporaryDirectory() + "afa-codec-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: dir) }

    func gradient(_ w: Int, _ h: Int) -> RGBImage {
        var img = RGBImage(width: w, height: h)
        for y in 0..<h { for x in 0..<w {
            img.pixels[(y * w + x) * 3] = UInt8(x * 255 / max(w - 1, 1))
            img.pixels[(y * w + x) * 3 + 1] = UInt8(y * 255 / max(h - 1, 1))
            img.pixels[(y * w + x) * 3 + 2] = UInt8((x + y) % 256)
        } }
        return img
    }

    func testPNGRoundTripIsExact() throws {
        let img = gradient(37, 21)
        try ImageCodec.writePNG(img, to: dir + "/a.png")
        XCTAssertEqual(try ImageCodec.readRGB(dir + "/a.png"), img)
    }

    func testLabelPNGKeepsIndicesNotColours() throws {
        let labels = LabelMap(width: 5, height: 3, values: [0, 1, 2, 3, 255, 20, 19, 0, 0, 4, 5, 6, 7, 8, 255])
        try ImageCodec.writeLabelPNG(labels, to: dir + "/l.png")
        XCTAssertEqual(try ImageCodec.readLabels(dir + "/l.png"), labels)
        // read as a picture, the same file shows the VOC colours
        let rgb = try ImageCodec.readRGB(dir + "/l.png")
        XCTAssertEqual(Array(rgb.pixels[3..<6]), [128, 0, 0])
    }

    func testJPEGRoundTripIsClose() throws {
        let img = gradient(64, 48)
        try ImageCodec.writeJPEG(img, to: dir + "/a.jpg", quality: 95)
        let back = try ImageCodec.readRGB(dir + "/a.jpg")
        XCTAssertEqual(back.width, 64); XCTAssertEqual(back.height, 48)
        let meanErr = zip(img.pixels, back.pixels).reduce(0.0) { $0 + abs(Double($1.0) - Double($1.1)) } / Double(img.pixels.count)
        XCTAssertLessThan(meanErr, 3)
    }

    func testCorruptAndTruncatedFilesAreErrorsNamingTheFile() throws {
        let img = gradient(40, 30)
        let png = try ImageCodec.encodePNG(img), jpg = try ImageCodec.encodeJPEG(img)
        let cases: [(String, Data)] = [
            ("trunc.png", png.prefix(png.count / 2)), ("trunc.jpg", jpg.prefix(jpg.count / 3)),
            ("garbage.png", Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A] + [UInt8](repeating: 7, count: 64))),
            ("garbage.jpg", Data([0xFF, 0xD8, 0xFF] + [UInt8](repeating: 0x13, count: 64))), ("text.jpg", Data("hello".utf8)),
        ]
        for (name, data) in cases {
            let path = dir + "/" + name
            try data.write(to: URL(fileURLWithPath: path))
            XCTAssertThrowsError(try ImageCodec.readRGB(path), name) { e in
                XCTAssertTrue("\(e)".contains(path), "error does not name the file: \(e)")
            }
        }
        XCTAssertThrowsError(try ImageCodec.readRGB(dir + "/missing.jpg")) { XCTAssertTrue("\($0)".contains("missing.jpg")) }
    }

    /// A JPEG whose frame header declares `width`×`height` (the scan data stays that of a small image).
    func jpegDeclaring(width: Int, height: Int) throws -> Data {
        var bytes = [UInt8](try ImageCodec.encodeJPEG(gradient(16, 16)))
        guard let sof = (0..<(bytes.count - 8)).first(where: { bytes[$0] == 0xFF && (bytes[$0 + 1] == 0xC0 || bytes[$0 + 1] == 0xC2) }) else {
            throw XCTSkip("no SOF marker in the encoder's output")
        }
        bytes[sof + 5] = UInt8(height >> 8); bytes[sof + 6] = UInt8(height & 0xFF)
        bytes[sof + 7] = UInt8(width >> 8); bytes[sof + 8] = UInt8(width & 0xFF)
        return Data(bytes)
    }

    func testHugeDeclaredSizesAreRefusedBeforeDecoding() throws {
        // 65500 × 60000 would need a 12 GB pixel buffer: refused from the header under the default limit.
        let bomb = try jpegDeclaring(width: 65500, height: 60000)
        XCTAssertThrowsError(try ImageCodec.decodeRGB(bomb, path: "bomb.jpg")) { e in
            XCTAssertEqual(e as? ImageIOError, .tooLarge(path: "bomb.jpg", width: 65500, height: 60000, limit: ImageCodec.defaultMaxPixels))
            XCTAssertTrue("\(e)".contains("100000000"), "\(e)")
        }
        // A caller's own limit applies to both formats.
        let png = try ImageCodec.encodePNG(gradient(40, 30))
        XCTAssertThrowsError(try ImageCodec.decodeRGB(png, path: "p.png", maxPixels: 1000)) { e in
            XCTAssertEqual(e as? ImageIOError, .tooLarge(path: "p.png", width: 40, height: 30, limit: 1000))
        }
        XCTAssertEqual(try ImageCodec.decodeRGB(png, maxPixels: 1200).width, 40)
        XCTAssertThrowsError(try ImageCodec.decodeRGB(try jpegDeclaring(width: 100, height: 100), maxPixels: 9999))
        // A PNG that is only a header declaring 100,000 × 100,000: "too large" (not "truncated"), from IHDR alone.
        let header = Data([0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A, 0, 0, 0, 13] + Array("IHDR".utf8)
                          + [0, 1, 0x86, 0xA0, 0, 1, 0x86, 0xA0, 8, 2, 0, 0, 0, 0, 0, 0, 0])
        XCTAssertThrowsError(try ImageCodec.decodeRGB(header, path: "h.png")) { e in
            XCTAssertEqual(e as? ImageIOError, .tooLarge(path: "h.png", width: 100_000, height: 100_000, limit: ImageCodec.defaultMaxPixels))
        }
    }

    /// A progressive JPEG whose last scan is repeated: the decoder accepts repeats, and each one is a pass
    /// over every coefficient, so a few kilobytes could hold it for minutes. More than 500 scans are refused.
    func testProgressiveJPEGWithTooManyScansIsRefused() throws {
        let image = gradient(64, 48)
        let jpeg = try ImageCodec.encodeJPEG(image, progressive: true)
        let bytes = [UInt8](jpeg)
        let sos = (0..<(bytes.count - 1)).filter { bytes[$0] == 0xFF && bytes[$0 + 1] == 0xDA }
        XCTAssertGreaterThan(sos.count, 5, "a progressive file has several scans")
        XCTAssertEqual(Array(bytes.suffix(2)), [0xFF, 0xD9])
        let lastScan = Array(bytes[sos.last!..<(bytes.count - 2)])
        func repeated(_ n: Int) -> Data {
            Data(bytes.dropLast(2) + Array([[UInt8]](repeating: lastScan, count: n).joined()) + [0xFF, 0xD9])
        }
        let decoded = try ImageCodec.decodeRGB(jpeg)
        XCTAssertEqual(decoded.width, 64)
        let few = try ImageCodec.decodeRGB(repeated(20))   // a few repeats still decode (to other pixels)
        XCTAssertEqual([few.width, few.height], [64, 48])
        XCTAssertThrowsError(try ImageCodec.decodeRGB(repeated(600), path: "bomb.jpg")) { e in
            XCTAssertTrue("\(e)".contains("bomb.jpg") && "\(e)".contains("more than 500 scans"), "\(e)")
        }
    }
}
