import TensorCore
import XCTest

final class TensorTests: XCTestCase {
    func testStorageIsAlignedAndZeroed() {
        let t = Tensor(zeros: [3, 5, 7])
        XCTAssertEqual(Int(bitPattern: t.storage.pointer) % 64, 0)
        XCTAssertEqual(t.count, 105)
        XCTAssertTrue(t.array.allSatisfy { $0 == 0 })
    }

    func testReshapeSliceAndItemShareStorage() throws {
        let t = try Tensor(shape: [2, 3, 2], values: (0..<12).map(Float.init))
        let r = try t.reshaped([3, -1])
        XCTAssertEqual(r.shape, [3, 4])
        r[2, 3] = 100
        XCTAssertEqual(t[1, 2, 1], 100)
        let s = try t.slice(1..<2)
        XCTAssertEqual(s.shape, [1, 3, 2])
        XCTAssertEqual(s.array, [6, 7, 8, 9, 10, 100])
        XCTAssertEqual(try t.item(0).array, [0, 1, 2, 3, 4, 5])
        XCTAssertThrowsError(try t.reshaped([5, 2])) { e in
            XCTAssertTrue("\(e)".contains("[2, 3, 2]") && "\(e)".contains("[5, 2]"), "\(e)")
        }
        XCTAssertThrowsError(try t.slice(1..<3))
    }

    func testPermuteMatchesIndexMapping() throws {
        let t = try Tensor(shape: [2, 3, 4], values: (0..<24).map(Float.init))
        let p = try t.permuted([2, 0, 1])
        XCTAssertEqual(p.shape, [4, 2, 3])
        for a in 0..<2 { for b in 0..<3 { for c in 0..<4 { XCTAssertEqual(p[c, a, b], t[a, b, c]) } } }
        XCTAssertThrowsError(try t.permuted([0, 0, 1]))
    }

    /// The two layout changes of the model go through tiled transposes; sizes that are not multiples of
    /// the 32×32 tile and more than one image check the tiles' edges and the per-image offsets.
    func testChannelsLastToFirstAndBackMatchIndexMapping() throws {
        let (b, h, w, c) = (2, 7, 9, 37)
        let t = try Tensor(shape: [b, h, w, c], values: (0..<(b * h * w * c)).map(Float.init))
        let first = try t.permuted([0, 3, 1, 2])
        XCTAssertEqual(first.shape, [b, c, h, w])
        for i in 0..<b { for y in 0..<h { for x in 0..<w { for k in 0..<c {
            XCTAssertEqual(first[i, k, y, x], t[i, y, x, k])
        } } } }
        let back = try first.permuted([0, 2, 3, 1])
        XCTAssertEqual(back.shape, t.shape)
        XCTAssertEqual(back.array, t.array)
    }

    /// Storage is aligned by hand inside a plain malloc block: every tensor's data starts on 64 bytes,
    /// whatever its size, and can be written to its last element.
    func testStorageIsSixtyFourByteAligned() throws {
        for n in [1, 3, 16, 1000, 65_537, 3 << 20] {
            let t = Tensor(uninitialized: [n])
            XCTAssertEqual(Int(bitPattern: t.data) % 64, 0, "\(n) floats")
            t.data[n - 1] = 7
            XCTAssertEqual(t.data[n - 1], 7)
        }
    }

    func testShapeErrorsNameBothShapes() throws {
        let a = Tensor(zeros: [2, 3]), b = Tensor(zeros: [3, 2])
        XCTAssertThrowsError(try a.adding(b)) { e in
            XCTAssertEqual("\(e)", "add: shape [2, 3] does not match shape [3, 2]")
        }
        XCTAssertThrowsError(try Tensor(shape: [2, 2], values: [1, 2, 3]))
        XCTAssertThrowsError(try a.expectShape([2, 4], "layer input")) { e in
            XCTAssertTrue("\(e)".contains("[2, 3]") && "\(e)".contains("[2, 4]"))
        }
    }

    func testParallelForEachVisitsEveryIndexOnce() {
        for workers in [1, 2, 3] {
            Runtime.setThreads(workers)
            var hits = [Int](repeating: 0, count: 101)
            hits.withUnsafeMutableBufferPointer { h in
                let p = h.baseAddress!
                Parallel.forEach(101) { i in p[i] += 1 }
            }
            XCTAssertEqual(hits, [Int](repeating: 1, count: 101))
        }
        Runtime.setThreads(nil)
    }
}
