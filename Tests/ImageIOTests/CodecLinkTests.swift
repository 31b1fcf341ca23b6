import ImageIO
import XCTest

/// The codec libraries are linked and report their versions (the decoders arrive with the data pipeline).
final class CodecLinkTests: XCTestCase {
    func testLibpngIsLinked() {
        let parts = CodecInfo.pngVersion.split(separator: ".").compactMap { Int($0) }
        XCTAssertEqual(parts.count, 3, "libpng version \(CodecInfo.pngVersion)")
        XCTAssertEqual(parts.first, 1)
    }

    func testLibjpegIsLinked() {
        XCTAssertGreaterThanOrEqual(CodecInfo.jpegVersion, 62)
    }
}
