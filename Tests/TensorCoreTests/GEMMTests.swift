import CBLASShim
import TensorCore
import XCTest

/// SGEMM through the wrapper against a naive Double product, under whatever OpenBLAS kernel the
/// process selected (`make test` exports the fast one).
final class GEMMTests: XCTestCase {
    /// Naive C = alpha·op(A)·op(B) + beta·C0 in Double.
    func reference(_ ta: Transpose, _ tb: Transpose, m: Int, n: Int, k: Int, alpha: Double,
                   a: [Float], lda: Int, b: [Float], ldb: Int, beta: Double, c0: [Float], ldc: Int) -> [Double] {
        var out = c0.map(Double.init)
        for i in 0..<m {
            for j in 0..<n {
                var s = 0.0
                for p in 0..<k {
                    let av = ta == .none ? a[i * lda + p] : a[p * lda + i]
                    let bv = tb == .none ? b[p * ldb + j] : b[j * ldb + p]
                    s += Double(av) * Double(bv)
                }
                out[i * ldc + j] = alpha * s + beta * Double(c0[i * ldc + j])
            }
        }
        return out
    }

    func random(_ n: Int, _ rng: inout RNG) -> [Float] { (0..<n).map { _ in rng.uniform(-1, 1) } }

    func check(_ ta: Transpose, _ tb: Transpose, m: Int, n: Int, k: Int, pad: Int, alpha: Float, beta: Float,
               file: StaticString = #filePath, line: UInt = #line) {
        var rng = RNG(seed: UInt64(m * 1000 + n * 10 + k))
        let lda = (ta == .none ? k : m) + pad
        let ldb = (tb == .none ? n : k) + pad
        let ldc = n + pad
        let a = random((ta == .none ? m : k) * lda, &rng)
        let b = random((tb == .none ? k : n) * ldb, &rng)
        var c = random(m * ldc, &rng)
        let expected = reference(ta, tb, m: m, n: n, k: k, alpha: Double(alpha), a: a, lda: lda, b: b, ldb: ldb,
                                 beta: Double(beta), c0: c, ldc: ldc)
        a.withUnsafeBufferPointer { ap in
            b.withUnsafeBufferPointer { bp in
                c.withUnsafeMutableBufferPointer { cp in
                    sgemm(ta, tb, m: m, n: n, k: k, alpha: alpha, a: ap.baseAddress!, lda: lda, b: bp.baseAddress!,
                          ldb: ldb, beta: beta, c: cp.baseAddress!, ldc: ldc)
                }
            }
        }
        var worst = 0.0
        for i in 0..<m {
            for j in 0..<ldc {
                let idx = i * ldc + j
                worst = max(worst, abs(Double(c[idx]) - expected[idx]))
            }
        }
        // Float accumulation of k products of magnitude ≤ 1.
        XCTAssertLessThan(worst, 1e-5 * Double(k + 1), "\(ta)/\(tb) \(m)x\(n)x\(k) pad \(pad) core \(BLASKernel.coreName)",
                          file: file, line: line)
    }

    func testAllTransposePairsOddShapes() {
        for ta in [Transpose.none, .transposed] {
            for tb in [Transpose.none, .transposed] {
                check(ta, tb, m: 7, n: 13, k: 5, pad: 0, alpha: 1, beta: 0)
                check(ta, tb, m: 33, n: 17, k: 65, pad: 3, alpha: 0.5, beta: 2)
                check(ta, tb, m: 1, n: 31, k: 9, pad: 1, alpha: -1, beta: 1)
            }
        }
    }

    func testLargeOddShapesUseTheVectorKernel() {
        // Large enough for the packed, multi-threaded AVX path of the selected core.
        check(.none, .none, m: 257, n: 129, k: 511, pad: 0, alpha: 1, beta: 0)
        check(.transposed, .transposed, m: 129, n: 263, k: 300, pad: 5, alpha: 1.5, beta: -0.5)
        check(.none, .transposed, m: 301, n: 97, k: 64, pad: 0, alpha: 1, beta: 1)
    }

    /// Products above the split threshold run as row or column blocks over the workers.
    func testBlockSplitProductsForEveryTransposePair() {
        Runtime.setThreads(2)
        for ta in [Transpose.none, .transposed] {
            for tb in [Transpose.none, .transposed] {
                check(ta, tb, m: 203, n: 77, k: 150, pad: 2, alpha: 1, beta: 0.5)    // row blocks
                check(ta, tb, m: 19, n: 301, k: 400, pad: 1, alpha: -0.5, beta: 1)   // column blocks
            }
        }
        // inside a parallel loop, products (and nested loops) run serially on their worker
        XCTAssertFalse(Parallel.isInsideParallelRegion)
        var flags = [Bool](repeating: false, count: 4)
        flags.withUnsafeMutableBufferPointer { f in
            let p = f.baseAddress!
            Parallel.forEach(4) { i in p[i] = Parallel.isInsideParallelRegion }
        }
        XCTAssertEqual(flags, [true, true, true, true])
        XCTAssertFalse(Parallel.isInsideParallelRegion)
        Runtime.setThreads(nil)
    }

    func testZeroInnerDimensionScalesC() {
        var c: [Float] = [1, 2, 3, 4]
        let a: [Float] = [0], b: [Float] = [0]
        c.withUnsafeMutableBufferPointer { cp in
            sgemm(.none, .none, m: 2, n: 2, k: 0, a: a, lda: 1, b: b, ldb: 2, beta: 0.5, c: cp.baseAddress!, ldc: 2)
        }
        XCTAssertEqual(c, [0.5, 1, 1.5, 2])
    }

    func testStridedBatchedMatchesPerItemProducts() {
        for workers in [1, 2] {
            Runtime.setThreads(workers)
            for batch in [1, 3, 5] {
                var rng = RNG(seed: UInt64(batch))
                let m = 9, n = 11, k = 6
                let sa = m * k + 2, sb = n * k + 1, sc = m * n + 3
                let a = random(batch * sa, &rng), b = random(batch * sb, &rng)
                var c = [Float](repeating: 7, count: batch * sc)
                a.withUnsafeBufferPointer { ap in
                    b.withUnsafeBufferPointer { bp in
                        c.withUnsafeMutableBufferPointer { cp in
                            sgemmStridedBatched(.none, .transposed, m: m, n: n, k: k, a: ap.baseAddress!, lda: k,
                                                strideA: sa, b: bp.baseAddress!, ldb: k, strideB: sb, c: cp.baseAddress!,
                                                ldc: n, strideC: sc, batch: batch)
                        }
                    }
                }
                for i in 0..<batch {
                    let exp = reference(.none, .transposed, m: m, n: n, k: k, alpha: 1,
                                        a: Array(a[(i * sa)..<(i * sa + m * k)]), lda: k,
                                        b: Array(b[(i * sb)..<(i * sb + n * k)]), ldb: k, beta: 0,
                                        c0: [Float](repeating: 0, count: m * n), ldc: n)
                    for j in 0..<(m * n) {
                        XCTAssertEqual(Double(c[i * sc + j]), exp[j], accuracy: 1e-5)
                    }
                    // Gaps between the batch items are untouched.
                    for j in (m * n)..<sc { XCTAssertEqual(c[i * sc + j], 7) }
                }
            }
        }
        Runtime.setThreads(nil)
    }

    func testTensorMatmulAndShapeErrors() throws {
        let a = try Tensor(shape: [2, 3], values: [1, 2, 3, 4, 5, 6])
        let b = try Tensor(shape: [3, 2], values: [1, 0, 0, 1, 1, 1])
        XCTAssertEqual(try a.matmul(b).array, [4, 5, 10, 11])
        XCTAssertEqual(try a.matmul(a, transposeOther: true).array, [14, 32, 32, 77])
        XCTAssertThrowsError(try a.matmul(a)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("[2, 3]"), text)
            XCTAssertTrue(text.contains("matmul"), text)
        }
        let x = Tensor(zeros: [2, 3, 4]), y = Tensor(zeros: [3, 4, 5])
        XCTAssertThrowsError(try x.batchedMatmul(y)) { error in
            let text = "\(error)"
            XCTAssertTrue(text.contains("[2, 3, 4]") && text.contains("[3, 4, 5]"), text)
        }
    }

    func testKernelSelectionLogic() {
        XCTAssertEqual(BLASKernel.recommendedCoreType(coreName: "Prescott", cpu: .avx512), "SkylakeX")
        XCTAssertEqual(BLASKernel.recommendedCoreType(coreName: "Nehalem", cpu: .avx2), "Haswell")
        XCTAssertEqual(BLASKernel.recommendedCoreType(coreName: "Haswell", cpu: .avx512), "SkylakeX")
        XCTAssertNil(BLASKernel.recommendedCoreType(coreName: "SkylakeX", cpu: .avx512))
        XCTAssertNil(BLASKernel.recommendedCoreType(coreName: "Cooperlake", cpu: .avx512))
        XCTAssertNil(BLASKernel.recommendedCoreType(coreName: "Haswell", cpu: .avx2))
        XCTAssertNil(BLASKernel.recommendedCoreType(coreName: "SomethingNew", cpu: .avx512))
        XCTAssertNil(BLASKernel.recommendedCoreType(coreName: "Prescott", cpu: nil))
    }

    func testSelectedKernelIsTheBestForThisCPU() throws {
        let env = ProcessInfo.processInfo.environment
        if let requested = env[BLASKernel.coreTypeVariable], !requested.isEmpty {
            // `make test` exports the recommended core type (or the user chose one): OpenBLAS must honour it.
            XCTAssertEqual(BLASKernel.coreName.lowercased(), requested.lowercased())
        }
        guard let better = BLASKernel.recommendedCoreType() else { return }
        throw XCTSkip("OpenBLAS runs its slower \(BLASKernel.coreName) kernel; run the tests through `make test`, "
                      + "which exports \(BLASKernel.coreTypeVariable)=\(better)")
    }
}
