import Foundation
import TensorCore
import XCTest

/// Element-wise and row kernels against scalar Double references.
final class KernelTests: XCTestCase {
    func values(_ n: Int, lo: Float = -6, hi: Float = 6, seed: UInt64 = 3) -> Tensor {
        var rng = RNG(seed: seed)
        let t = Tensor(zeros: [n])
        t.fillUniform(lo, hi, rng: &rng)
        return t
    }

    // Sizes with SIMD tails and sizes above the parallel grain.
    let sizes = [1, 15, 16, 17, 1000, Kernels.grain * 3 + 5]

    func testBinaryAndScaleKernels() throws {
        for n in sizes {
            let a = values(n, seed: 1), b = values(n, seed: 2)
            let sum = try a.adding(b), prod = try a.multiplying(b), sc = a.scaled(-0.25)
            let y = b.copy()
            try y.addScaled(a, alpha: 3)
            let r = Tensor(zeros: [n]); Kernels.relu(a.data, r.data, n)
            for i in 0..<n {
                XCTAssertEqual(sum.data[i], a.data[i] + b.data[i])
                XCTAssertEqual(prod.data[i], a.data[i] * b.data[i])
                XCTAssertEqual(sc.data[i], a.data[i] * -0.25)
                XCTAssertEqual(y.data[i], b.data[i] + 3 * a.data[i], accuracy: 1e-6)
                XCTAssertEqual(r.data[i], max(a.data[i], 0))
            }
        }
    }

    func testWeightedSumEqualsAxpyInOrderToTheBit() {
        for n in sizes {
            let maps = (0..<5).map { values(n, seed: UInt64(10 + $0)) }
            let weights: [Float] = [0.3, -1.7, 2.5e-3, 11, -0.125]
            let want = Tensor(zeros: [n])
            for (m, w) in zip(maps, weights) { Kernels.axpy(w, m.data, want.data, n) }
            let got = Tensor(shape: [n], repeating: .nan)
            withExtendedLifetime(maps) {   // the kernel reads the maps through raw pointers
                Kernels.weightedSum(maps.map { UnsafePointer($0.data) }, weights: weights, into: got.data, n)
            }
            let bad = (0..<n).filter { got.data[$0].bitPattern != want.data[$0].bitPattern }
            XCTAssertEqual(bad.count, 0, "n \(n): first at \(bad.first.map { "\($0): \(got.data[$0]) vs \(want.data[$0])" } ?? "-")")
            XCTAssertNotEqual(want.data[n / 2], 0)
        }
        // no maps: zeros
        let empty = Tensor(shape: [17], repeating: .nan)
        Kernels.weightedSum([], weights: [], into: empty.data, 17)
        XCTAssertEqual(empty.data[16], 0)
    }

    func testExpAndSigmoidMatchDouble() {
        let n = 5000
        let x = values(n, lo: -80, hi: 80)
        let e = Tensor(zeros: [n]); Kernels.exp(x.data, e.data, n)
        let s = Tensor(zeros: [n]); Kernels.sigmoid(x.data, s.data, n)
        for i in 0..<n {
            let xd = Double(x.data[i])
            let ref = Foundation.exp(xd)
            XCTAssertLessThan(abs(Double(e.data[i]) - ref) / ref, 3e-7, "exp(\(xd))")
            XCTAssertEqual(Double(s.data[i]), 1 / (1 + Foundation.exp(-xd)), accuracy: 2e-7)
        }
    }

    func testGeluMatchesErfFormula() {
        for n in sizes {
            let x = values(n, lo: -8, hi: 8)
            let y = Tensor(zeros: [n]); Kernels.gelu(x.data, y.data, n)
            let dy = values(n, seed: 9)
            let dx = Tensor(zeros: [n]); Kernels.geluBackward(x.data, dy.data, dx.data, n)
            for i in 0..<n {
                let v = Double(x.data[i])
                let cdf = 0.5 * (1 + Foundation.erf(v / 2.0.squareRoot()))
                // 1e-6 relative to max(1, |y|): two float ulps at |y| ≈ 4.
                XCTAssertEqual(Double(y.data[i]), v * cdf, accuracy: 1e-6 * max(1, abs(v * cdf)), "gelu(\(v))")
                let grad = cdf + v * Foundation.exp(-0.5 * v * v) / (2 * Double.pi).squareRoot()
                XCTAssertEqual(Double(dx.data[i]), Double(dy.data[i]) * grad, accuracy: 2e-6 * max(1, abs(Double(dy.data[i]) * grad)),
                               "gelu'(\(v))")
            }
        }
    }

    func testSoftmaxRowsStableForLargeInputs() {
        let rows = 3, cols = 37
        let x = Tensor(zeros: [rows, cols])
        for r in 0..<rows { for c in 0..<cols { x.data[r * cols + c] = Float(1e4 * Double(r + 1)) + Float(c) * 0.5 } }
        let y = Tensor(zeros: [rows, cols])
        Kernels.softmaxRows(x.data, y.data, rows: rows, cols: cols, scale: 0.5)
        for r in 0..<rows {
            var total = 0.0
            let m = Double(x.data[r * cols + cols - 1]) * 0.5
            var denom = 0.0
            for c in 0..<cols { denom += Foundation.exp(Double(x.data[r * cols + c]) * 0.5 - m) }
            for c in 0..<cols {
                let v = y.data[r * cols + c]
                XCTAssertFalse(v.isNaN)
                XCTAssertEqual(Double(v), Foundation.exp(Double(x.data[r * cols + c]) * 0.5 - m) / denom, accuracy: 1e-6)
                total += Double(v)
            }
            XCTAssertEqual(total, 1, accuracy: 1e-5)
        }
    }

    func testSoftmaxBackwardMatchesFiniteDifferences() {
        let cols = 9
        var rng = RNG(seed: 5)
        let x = Tensor(zeros: [1, cols]); x.fillUniform(-2, 2, rng: &rng)
        let w = Tensor(zeros: [1, cols]); w.fillUniform(-1, 1, rng: &rng)
        // loss = Σ w ⊙ softmax(0.7 x), evaluated in Double for the finite differences.
        func loss(_ xs: [Double]) -> Double {
            let m = xs.max()!
            let e = xs.map { Foundation.exp(0.7 * ($0 - m)) }
            let s = e.reduce(0, +)
            return zip(e, w.array).map { $0 / s * Double($1) }.reduce(0, +)
        }
        let y = Tensor(zeros: [1, cols]); Kernels.softmaxRows(x.data, y.data, rows: 1, cols: cols, scale: 0.7)
        let dx = Tensor(zeros: [1, cols]); Kernels.softmaxRowsBackward(y.data, w.data, dx.data, rows: 1, cols: cols, scale: 0.7)
        let xs = x.array.map(Double.init)
        for j in 0..<cols {
            var p = xs, m = xs
            p[j] += 1e-4; m[j] -= 1e-4
            XCTAssertEqual(Double(dx.data[j]), (loss(p) - loss(m)) / 2e-4, accuracy: 1e-5)
        }
    }

    func testReductionsUseDoubleAndAreDeterministic() {
        let n = Kernels.grain * 5 + 123
        let x = values(n, lo: -1, hi: 1, seed: 11)
        var ref = 0.0, ref2 = 0.0
        for i in 0..<n { ref += Double(x.data[i]); ref2 += Double(x.data[i]) * Double(x.data[i]) }
        Runtime.setThreads(1)
        let s1 = x.sum(), q1 = Kernels.sumOfSquares(x.data, n)
        Runtime.setThreads(2)
        var results = Set<UInt64>()
        for _ in 0..<20 { results.insert(x.sum().bitPattern) }
        let q2 = Kernels.sumOfSquares(x.data, n)
        Runtime.setThreads(nil)
        XCTAssertEqual(results, [s1.bitPattern], "parallel sum differs across runs or worker counts")
        XCTAssertEqual(q1.bitPattern, q2.bitPattern)
        XCTAssertEqual(s1, ref, accuracy: 1e-12 * Double(n))
        XCTAssertEqual(q1, ref2, accuracy: 1e-12 * ref2)
        // the same terms in the same order: the dot of x with itself is its sum of squares, to the bit
        XCTAssertEqual(Kernels.dot(x.data, x.data, n).bitPattern, q1.bitPattern)
        for m in [0, 1, 15, 16, 17, 40] {   // shorter than the lanes, exactly one step, a step and a tail
            var exact = 0.0
            for i in 0..<m { exact += Double(x.data[i]) }
            XCTAssertEqual(Kernels.sum(x.data, m), exact, accuracy: 1e-15 * Double(max(m, 1)), "n = \(m)")
        }
        XCTAssertEqual(Kernels.maxValue(x.data, n), x.array.max()!)
    }
}
