import Foundation
import Layers
import TensorCore
import XCTest

/// Every layer's backward against central finite differences, on small odd shapes with batch > 1.
final class LayerGradientTests: XCTestCase {
    let check = GradientCheck()

    func testLinear() throws {
        for (bias, conv) in [(true, false), (false, true)] {
            let l = Linear(name: "fc", in: 7, out: 5, bias: bias, asConv1x1: conv)
            randomize(l.parameters, seed: 1)
            let x = randomTensor([2, 3, 7], seed: 2)
            try check.run(inputs: [x], parameters: l.parameters, forward: { ws in [try l.forward(x, ws)] },
                          backward: { d, ws in [try l.backward(d[0], ws)] })
        }
    }

    func testColumnSumsAreTheSerialSumsBitForBit() throws {
        // The bias gradients' column sums run in parallel by column blocks: each column must still be
        // summed over the rows in order, so any worker count gives the serial loop's bits.
        for (rows, cols) in [(1, 1), (7, 31), (300, 33), (513, 200)] {
            let x = randomTensor([rows, cols], seed: UInt64(rows * 1000 + cols), lo: -5, hi: 5)
            var serial = [Float](repeating: 0.25, count: cols)
            for j in 0..<cols {
                var acc = 0.0
                for r in 0..<rows { acc += Double(x.data[r * cols + j]) }
                serial[j] += Float(acc)
            }
            for workers in [1, 2, 3] {
                var out = [Float](repeating: 0.25, count: cols)
                Parallel.withWorkers(workers) { columnSums(x.data, rows: rows, cols: cols, into: &out) }
                XCTAssertEqual(out.map(\.bitPattern), serial.map(\.bitPattern), "\(rows)×\(cols), \(workers) workers")
            }
        }
    }

    func testConv2dAllOptions() throws {
        // (in, out, kernel, stride, padding, groups, H, W)
        let cases = [(3, 4, 7, 4, 3, 1, 13, 11),   // patch-embed 1 style, odd sizes
                     (4, 6, 3, 2, 1, 1, 7, 6),     // patch-embed 2-4 style
                     (5, 5, 2, 2, 0, 1, 5, 7),     // stride = kernel (patchify), cropped edge
                     (4, 6, 3, 1, 1, 2, 5, 4),     // groups
                     (3, 2, 1, 1, 0, 1, 3, 3)]     // 1x1
        for (n, (cin, cout, k, s, p, g, h, w)) in cases.enumerated() {
            let conv = Conv2d(name: "conv\(n)", in: cin, out: cout, kernel: k, stride: s, padding: p, groups: g)
            randomize(conv.parameters, seed: UInt64(10 + n))
            let x = randomTensor([2, h, w, cin], seed: UInt64(20 + n))
            try check.run(inputs: [x], parameters: conv.parameters, forward: { ws in [try conv.forward(x, ws)] },
                          backward: { d, ws in [try conv.backward(d[0], ws)] })
        }
    }

    func testConv2dMatchesDirectConvolution() throws {
        // Forward against a naive NCHW-indexed convolution (PyTorch's definition).
        let conv = Conv2d(name: "c", in: 4, out: 6, kernel: 3, stride: 2, padding: 1, groups: 2)
        randomize(conv.parameters, seed: 3)
        let x = randomTensor([2, 7, 6, 4], seed: 4)
        let y = try conv.forward(x, Workspace.inference())
        let ho = 4, wo = 3
        XCTAssertEqual(y.shape, [2, ho, wo, 6])
        for b in 0..<2 { for o in 0..<6 { for oy in 0..<ho { for ox in 0..<wo {
            let g = o / 3
            var s = Double(conv.bias!.value[o])
            for ci in 0..<2 { for ky in 0..<3 { for kx in 0..<3 {
                let iy = oy * 2 - 1 + ky, ix = ox * 2 - 1 + kx
                if iy < 0 || iy >= 7 || ix < 0 || ix >= 6 { continue }
                s += Double(conv.weight.value[o, ci, ky, kx]) * Double(x[b, iy, ix, g * 2 + ci])
            } } }
            XCTAssertEqual(Double(y[b, oy, ox, o]), s, accuracy: 1e-5)
        } } } }
    }

    func testDepthwiseConv3x3() throws {
        for c in [3, 19] {   // below and above one SIMD vector
            let dw = DepthwiseConv3x3(name: "dw", channels: c)
            randomize(dw.parameters, seed: 5)
            let x = randomTensor([2, 5, 7, c], seed: 6)
            try check.run(inputs: [x], parameters: dw.parameters, forward: { ws in [try dw.forward(x, ws)] },
                          backward: { d, ws in [try dw.backward(d[0], ws)] })
        }
    }

    func testDepthwiseConv3x3IsTheDefiningSumsBitForBit() throws {
        // Forward: bias, then the taps inside the image in row-major order, one rounding per product and
        // per add. Backward: dx as scattering each output's w·dy into a zeroed dx, outputs in raster order
        // (taps row-major); dw and db as per-image sums over the outputs in raster order, added to the
        // store image after image. Channel counts below, across and past the vector blocks; maps of one
        // row or one column, where both of a pixel's neighbours on that axis are outside. The row kernel
        // takes interior pixels four at a time: widths 6 and 7 have one such group, 10 two, 5 and less none.
        let cases: [([Int], Int)] = [([2, 5, 7], 3), ([2, 5, 7], 19), ([1, 4, 6], 64), ([1, 1, 5], 21),
                                     ([2, 6, 1], 24), ([1, 1, 1], 17), ([1, 3, 10], 512), ([2, 2, 7], 1100)]
        for (grid, c) in cases {
            let (b, h, w) = (grid[0], grid[1], grid[2])
            let dw = DepthwiseConv3x3(name: "dw", channels: c)
            randomize(dw.parameters, seed: 30)
            let x = randomTensor([b, h, w, c], seed: 31, lo: -3, hi: 3)
            let dy = randomTensor([b, h, w, c], seed: 32)
            let wt = dw.weight.value.array, bias = dw.bias.value.array, xs = x.array, ds = dy.array
            func at(_ bi: Int, _ yy: Int, _ xx: Int) -> Int { ((bi * h + yy) * w + xx) * c }
            var y = [Float](repeating: 0, count: x.count)
            var dx = [Float](repeating: 0, count: x.count)
            var gw = [Float](repeating: 0, count: c * 9), gb = [Float](repeating: 0, count: c)
            for bi in 0..<b {
                var pw = [Float](repeating: 0, count: c * 9), pb = [Float](repeating: 0, count: c)
                for yy in 0..<h { for xx in 0..<w { for ch in 0..<c {
                    var acc = bias[ch]
                    pb[ch] += ds[at(bi, yy, xx) + ch]
                    for ky in 0..<3 { for kx in 0..<3 {
                        let iy = yy + ky - 1, ix = xx + kx - 1
                        if iy < 0 || iy >= h || ix < 0 || ix >= w { continue }
                        let (wk, xi, g) = (wt[ch * 9 + ky * 3 + kx], xs[at(bi, iy, ix) + ch], ds[at(bi, yy, xx) + ch])
                        acc += wk * xi
                        dx[at(bi, iy, ix) + ch] += wk * g
                        pw[ch * 9 + ky * 3 + kx] += xi * g
                    } }
                    y[at(bi, yy, xx) + ch] = acc
                } } }
                for k in 0..<(c * 9) { gw[k] += pw[k] }
                for ch in 0..<c { gb[ch] += pb[ch] }
            }
            let label = "grid \(grid), channels \(c)"
            XCTAssertEqual(try dw.forward(x, Workspace.inference()).array.map(\.bitPattern), y.map(\.bitPattern), label)
            let gradients = Gradients(for: dw.parameters)
            let ws = Workspace.training(gradients: gradients, rng: RNG(seed: 0))
            XCTAssertEqual(try dw.forward(x, ws).array.map(\.bitPattern), y.map(\.bitPattern), label)
            XCTAssertEqual(try dw.backward(dy, ws).array.map(\.bitPattern), dx.map(\.bitPattern), label)
            XCTAssertEqual(gradients[dw.weight].array.map(\.bitPattern), gw.map(\.bitPattern), label)
            XCTAssertEqual(gradients[dw.bias].array.map(\.bitPattern), gb.map(\.bitPattern), label)
        }
    }

    func testDepthwiseConvThenGELUIsTheTwoLayersBitForBit() throws {
        // The fused pass must give exactly conv, then GELU, recording or not; when recording it keeps x
        // for the conv's backward, and `recomputeThenGELU` rebuilds conv(x) and its GELU from it bit for bit.
        for c in [3, 19, 64] {
            let dw = DepthwiseConv3x3(name: "dw", channels: c)
            randomize(dw.parameters, seed: 15)
            let x = randomTensor([2, 5, 7, c], seed: 16, lo: -3, hi: 3)
            let ws = Workspace.inference()
            let conv = try dw.forward(x, ws)
            let twoPasses = GELU().forward(conv, ws)
            let fused = try dw.forwardThenGELU(x, ws)
            XCTAssertEqual(fused.shape, x.shape)
            XCTAssertEqual(fused.array.map(\.bitPattern), twoPasses.array.map(\.bitPattern), "channels \(c)")
            XCTAssertNotEqual(fused.array, conv.array)   // the activation was applied
            XCTAssertThrowsError(try dw.recomputeThenGELU(ws))   // nothing was kept

            let recording = Workspace.training(gradients: Gradients(for: dw.parameters), rng: RNG(seed: 0))
            let activated = try dw.forwardThenGELU(x, recording)
            XCTAssertEqual(activated.array.map(\.bitPattern), twoPasses.array.map(\.bitPattern), "channels \(c)")
            let (pre, again) = try dw.recomputeThenGELU(recording)
            XCTAssertEqual(pre.array.map(\.bitPattern), conv.array.map(\.bitPattern), "channels \(c)")
            XCTAssertEqual(again.array.map(\.bitPattern), twoPasses.array.map(\.bitPattern), "channels \(c)")
            XCTAssertEqual(recording.savedCount, 1)       // peeking left x for the backward
            let dx = try dw.backward(randomTensor(x.shape, seed: 17), recording)
            XCTAssertEqual(dx.shape, x.shape)
            XCTAssertEqual(recording.savedCount, 0)
        }
    }

    func testLayerNorm() throws {
        // 15 rows: backward's groups of four rows end with three; 21 features: 8-lane blocks and a tail.
        for features in [6, 21] {
            let ln = LayerNorm(name: "ln", features: features, eps: 1e-5)
            randomize(ln.parameters, seed: 7)
            let x = randomTensor([3, 5, features], seed: 8, lo: -2, hi: 2)
            try check.run(inputs: [x], parameters: ln.parameters, forward: { ws in [try ln.forward(x, ws)] },
                          backward: { d, ws in [try ln.backward(d[0], ws)] })
        }
    }

    func testLayerNormOfAResidualSum() throws {
        // y = LN(x + r) with the sum kept; backward adds the norm's input gradient into the gradient that
        // reached the sum by the residual path (here the weight of the kept-sum output).
        let ln = LayerNorm(name: "ln", features: 21, eps: 1e-5)
        randomize(ln.parameters, seed: 20)
        let x = randomTensor([3, 5, 21], seed: 21, lo: -2, hi: 2), r = randomTensor([3, 5, 21], seed: 22)
        try check.run(inputs: [x, r], parameters: ln.parameters, forward: { ws in
            let (sum, y) = try ln.forwardKeepingSum(x, plus: r, ws)
            return [sum, y]
        }, backward: { d, ws in
            let dSum = d[0].copy()
            try ln.backward(d[1], accumulatingInto: dSum, ws)
            return [dSum, dSum.copy()]
        })
    }

    func testLayerNormOfAResidualSumIsTheAddThenTheNormBitForBit() throws {
        // 37 features: two 16-lane blocks and a tail, in the add as in the norm.
        for features in [6, 37] {
            let ln = LayerNorm(name: "ln", features: features, eps: 1e-5)
            randomize(ln.parameters, seed: 23)
            let x = randomTensor([2, 7, features], seed: 24, lo: -2, hi: 2), r = randomTensor(x.shape, seed: 25)
            let dy = randomTensor(x.shape, seed: 26), dResidual = randomTensor(x.shape, seed: 27)
            let two = Workspace(mode: .training, recording: true, gradients: Gradients(for: ln.parameters))
            let s2 = try x.adding(r)
            let y2 = try ln.forward(s2, two)
            let dx2 = try ln.backward(dy, two)
            try dx2.addScaled(dResidual)
            for keepingSum in [true, false] {
                let fusedWS = Workspace(mode: .training, recording: true, gradients: Gradients(for: ln.parameters))
                let y1: Tensor
                if keepingSum {
                    let s1: Tensor
                    (s1, y1) = try ln.forwardKeepingSum(x, plus: r, fusedWS)
                    XCTAssertEqual(s1.array.map(\.bitPattern), s2.array.map(\.bitPattern))
                } else {
                    y1 = try ln.forward(x, plus: r, fusedWS)
                }
                XCTAssertEqual(y1.array.map(\.bitPattern), y2.array.map(\.bitPattern))
                let dx1 = dResidual.copy()
                try ln.backward(dy, accumulatingInto: dx1, fusedWS)
                XCTAssertEqual(dx1.array.map(\.bitPattern), dx2.array.map(\.bitPattern))
                XCTAssertEqual(fusedWS.gradients!.flat.array.map(\.bitPattern), two.gradients!.flat.array.map(\.bitPattern))
                // inference: nothing kept, same values
                let y3 = keepingSum ? try ln.forwardKeepingSum(x, plus: r, Workspace.inference()).normalized
                                    : try ln.forward(x, plus: r, Workspace.inference())
                XCTAssertEqual(y3.array.map(\.bitPattern), y2.array.map(\.bitPattern))
            }
            XCTAssertThrowsError(try ln.forwardKeepingSum(x, plus: randomTensor([2, 6, features], seed: 28), two))
            XCTAssertThrowsError(try ln.forward(x, plus: randomTensor([2, 6, features], seed: 28), two))
        }
    }

    func testBatchNormTrainAndEval() throws {
        // 37 channels: a full block of 32 for the statistics and 16-lane rows, then the tails.
        for training in [true, false] {
            for channels in [5, 37] {
                let bn = BatchNorm2d(name: "bn", channels: channels)
                randomize(bn.parameters, seed: 9)
                bn.runningVar.value.fill(1.3)
                let x = randomTensor([2, 3, 4, channels], seed: 10, lo: -2, hi: 2)
                try check.run(inputs: [x], parameters: bn.parameters, mode: training ? .training : .inference,
                              forward: { ws in [try bn.forward(x, ws)] },
                              backward: { d, ws in [try bn.backward(d[0], ws)] })
            }
        }
    }

    func testBatchNormThenReLUIsTheTwoLayersBitForBit() throws {
        // The fused pass keeps only x̂ and rebuilds the ReLU's mask from it in backward: outputs, input
        // gradients and parameter gradients must equal BatchNorm followed by a separate ReLU exactly.
        for training in [true, false] {
            for channels in [7, 40] {
                let bn = BatchNorm2d(name: "bn", channels: channels)
                randomize(bn.parameters, seed: 12)
                bn.runningVar.value.fill(1.3)
                let x = randomTensor([2, 3, 4, channels], seed: 13, lo: -2, hi: 2)
                let dy = randomTensor(x.shape, seed: 14)
                let mode: Workspace.Mode = training ? .training : .inference
                let two = Workspace(mode: mode, recording: true, gradients: Gradients(for: bn.parameters))
                let relu = ReLU()
                let y2 = relu.forward(try bn.forward(x, two), two)
                let dx2 = try bn.backward(try relu.backward(dy, two), two)
                let fusedWS = Workspace(mode: mode, recording: true, gradients: Gradients(for: bn.parameters))
                let y1 = try bn.forward(x, fusedWS, thenReLU: true)
                XCTAssertEqual(fusedWS.savedCount, 1)
                let dx1 = try bn.backward(dy, fusedWS)
                XCTAssertEqual(y1.array.map(\.bitPattern), y2.array.map(\.bitPattern))
                XCTAssertTrue(y1.array.contains(0) && y1.array.contains { $0 > 0 })   // both sides of the kink
                XCTAssertEqual(dx1.array.map(\.bitPattern), dx2.array.map(\.bitPattern))
                XCTAssertEqual(fusedWS.gradients!.flat.array.map(\.bitPattern), two.gradients!.flat.array.map(\.bitPattern))
                XCTAssertNotEqual(fusedWS.gradients!.flat.array, [Float](repeating: 0, count: 2 * channels))
            }
        }
    }

    func testBatchNormRunningStatistics() throws {
        let bn = BatchNorm2d(name: "bn", channels: 2, momentum: 0.1)
        let x = try Tensor(shape: [1, 2, 2, 2], values: [1, 10, 2, 20, 3, 30, 4, 40])
        _ = try bn.forward(x, Workspace(mode: .training, recording: false))
        // channel 0: mean 2.5, unbiased var 5/3
        XCTAssertEqual(bn.runningMean.value[0], 0.25, accuracy: 1e-6)
        XCTAssertEqual(bn.runningVar.value[0], 0.9 + 0.1 * 5 / 3, accuracy: 1e-6)
        XCTAssertEqual(bn.runningMean.value[1], 2.5, accuracy: 1e-5)
        XCTAssertEqual(bn.numBatchesTracked.value, 1)
        // Eval mode reads the running statistics and changes nothing.
        _ = try bn.forward(x, Workspace.inference())
        XCTAssertEqual(bn.numBatchesTracked.value, 1)
        XCTAssertEqual(bn.runningMean.value[0], 0.25, accuracy: 1e-6)
    }

    func testActivations() throws {
        let x = randomTensor([2, 3, 11], seed: 11, lo: -3, hi: 3)
        // keep ReLU away from its kink
        for i in 0..<x.count where abs(x.data[i]) < 0.05 { x.data[i] = 0.3 }
        let gelu = GELU(), relu = ReLU(), sig = Sigmoid()
        try check.run(inputs: [x], parameters: [], forward: { ws in [gelu.forward(x, ws)] }, backward: { d, ws in [try gelu.backward(d[0], ws)] })
        try check.run(inputs: [x], parameters: [], forward: { ws in [relu.forward(x, ws)] }, backward: { d, ws in [try relu.backward(d[0], ws)] })
        try check.run(inputs: [x], parameters: [], forward: { ws in [sig.forward(x, ws)] }, backward: { d, ws in [try sig.backward(d[0], ws)] })
    }

    func testEfficientAttentionWithAndWithoutReduction() throws {
        // (dim, heads, sr, h, w): sr = 1; sr = 2 on an even grid; sr = 2 on an odd grid (cropped cells).
        for (n, (dim, heads, sr, h, w)) in [(6, 2, 1, 3, 4), (8, 2, 2, 4, 6), (4, 1, 2, 5, 3)].enumerated() {
            let attn = EfficientAttention(name: "attn", dim: dim, heads: heads, srRatio: sr, normEps: 1e-5)
            randomize(attn.parameters, seed: UInt64(30 + n), scale: 0.6)
            let x = randomTensor([2, h * w, dim], seed: UInt64(40 + n))
            try check.run(inputs: [x], parameters: attn.parameters,
                          forward: { ws in let (o, r) = try attn.forward(x, h: h, w: w, ws); return [o, r!] },
                          backward: { d, ws in [try attn.backward(d[0], dRaw: d[1], ws)] })
        }
    }

    func testAttentionRawLogitsArePooledUnscaledProducts() throws {
        let attn = EfficientAttention(name: "a", dim: 4, heads: 2, srRatio: 1, normEps: 1e-5)
        randomize(attn.parameters, seed: 50)
        let x = randomTensor([1, 6, 4], seed: 51)
        let ws = Workspace.inference()
        let raw = try XCTUnwrap(try attn.forward(x, h: 2, w: 3, ws).1)
        let q = try attn.q.forward(x, ws), kv = try attn.kv.forward(x, ws)
        XCTAssertEqual(raw.shape, [1, 2, 6, 6])
        for hd in 0..<2 { for i in 0..<6 { for j in 0..<6 {
            var s: Float = 0
            for d in 0..<2 { s += q[0, i, hd * 2 + d] * kv[0, j, hd * 2 + d] }
            XCTAssertEqual(raw[0, hd, i, j], s, accuracy: 1e-5)
        } } }
    }

    /// The attention works through each head's map by bands and blocks of query rows; on grids large
    /// enough for several bands, several blocks per band and a band below the last whole pooled cell,
    /// its output and pooled logits match the whole-map definition computed here, and passes that
    /// record, that keep nothing, or that skip the raw logits give the same bits.
    func testAttentionByRowBlocksMatchesTheWholeMap() throws {
        // (dim, heads, sr, h, w): two blocks per band and a tail row; sr = 4 with cropped cells; sr = 1, three bands.
        for (n, (dim, heads, sr, h, w)) in [(4, 1, 2, 65, 64), (4, 1, 4, 33, 70), (8, 2, 1, 20, 20)].enumerated() {
            let attn = EfficientAttention(name: "a", dim: dim, heads: heads, srRatio: sr, normEps: 1e-5)
            randomize(attn.parameters, seed: UInt64(70 + n), scale: 0.6)
            let x = randomTensor([2, h * w, dim], seed: UInt64(80 + n))
            let ws = Workspace.inference()
            let (out, rawOpt) = try attn.forward(x, h: h, w: w, ws)
            let raw = try XCTUnwrap(rawOpt)

            // The whole-map definition, in Double.
            let q = try attn.q.forward(x, ws)
            var src = x
            if let conv = attn.sr, let norm = attn.norm {
                let r = try conv.forward(try x.reshaped([2, h, w, dim]), ws)
                src = try norm.forward(try r.reshaped([2, r.shape[1] * r.shape[2], dim]), ws)
            }
            let kv = try attn.kv.forward(src, ws)
            let m = src.shape[1], hd = dim / heads, tokens = h * w
            let (hs, wg) = attn.rawGrid(h: h, w: w)
            XCTAssertEqual(raw.shape, [2, heads, sr > 1 ? hs * wg : tokens, m])
            let attended = Tensor(zeros: [2, tokens, dim])
            let qp = q.data, kvp = kv.data            // q and kv stay alive to the end of the loop body
            var worstRaw = 0.0
            for b in 0..<2 {
                for head in 0..<heads {
                    var logits = [Double](repeating: 0, count: tokens * m)
                    for i in 0..<tokens {
                        for j in 0..<m {
                            var s = 0.0
                            for d in 0..<hd { s += Double(qp[(b * tokens + i) * dim + head * hd + d]) * Double(kvp[(b * m + j) * 2 * dim + head * hd + d]) }
                            logits[i * m + j] = s
                        }
                        let row = logits[(i * m)..<(i * m + m)]
                        let top = row.max()!
                        let e = row.map { Foundation.exp((($0 - top) * Double(attn.scale))) }
                        let z = e.reduce(0, +)
                        for d in 0..<hd {
                            var v = 0.0
                            for j in 0..<m { v += e[j] / z * Double(kvp[(b * m + j) * 2 * dim + dim + head * hd + d]) }
                            attended.data[(b * tokens + i) * dim + head * hd + d] = Float(v)
                        }
                    }
                    for cell in 0..<raw.shape[2] {
                        var expected = 0.0
                        for j in 0..<m {
                            if sr > 1 {
                                let (cy, cx) = (cell / wg, cell % wg)
                                expected = 0
                                for y in (cy * sr)..<(cy * sr + sr) { for xx in (cx * sr)..<(cx * sr + sr) { expected += logits[(y * w + xx) * m + j] } }
                                expected /= Double(sr * sr)
                            } else {
                                expected = logits[cell * m + j]
                            }
                            worstRaw = max(worstRaw, abs(expected - Double(raw.data[((b * heads + head) * raw.shape[2] + cell) * m + j])))
                        }
                    }
                }
            }
            withExtendedLifetime((q, kv)) {}
            XCTAssertLessThan(worstRaw, 1e-5, "pooled raw logits, case \(n)")
            let expectedOut = try attn.proj.forward(attended, ws)
            var worstOut: Float = 0
            for i in 0..<out.count { worstOut = max(worstOut, abs(out.data[i] - expectedOut.data[i])) }
            XCTAssertLessThan(worstOut, 1e-5, "output, case \(n)")

            // Recording, keeping nothing, skipping the raw logits: the same bits.
            let recorded = try attn.forward(x, h: h, w: w, Workspace(mode: .inference, recording: true))
            let noRaw = try attn.forward(x, h: h, w: w, Workspace.inference(), keepRaw: false)
            XCTAssertNil(noRaw.1)
            for (name, a, b) in [("recorded output", out, recorded.0), ("recorded raw", raw, recorded.1!), ("output without raw", out, noRaw.0)] {
                XCTAssertEqual(a.shape, b.shape, name)
                XCTAssertTrue((0..<a.count).allSatisfy { a.data[$0].bitPattern == b.data[$0].bitPattern }, "\(name), case \(n)")
            }
        }
    }

    func testBilinearResizeBothModes() throws {
        // 19 channels: backward's 16-lane updates (with clamped edges, where two corners are one pixel) and a tail.
        for align in [false, true] {
            for (ih, iw, oh, ow) in [(3, 5, 7, 4), (6, 6, 3, 2), (2, 3, 2, 3)] {
                for channels in [3, 19] {
                    let r = BilinearResize(inH: ih, inW: iw, outH: oh, outW: ow, alignCorners: align)
                    let x = randomTensor([2, ih, iw, channels], seed: 60)
                    try check.run(inputs: [x], parameters: [], forward: { _ in [try r.forward(x)] },
                                  backward: { d, _ in [try r.backward(d[0])] })
                }
            }
        }
    }

    func testLinearAndResizeIntoAChannelBlockMatchTheirPlainOutputs() throws {
        // The decoder writes each stage's projection (resized) into its block of the concatenation:
        // the block must hold exactly the plain outputs, and the other channels stay untouched.
        let lin = Linear(name: "lin", in: 5, out: 3)
        randomize(lin.parameters, seed: 21)
        let x = randomTensor([2, 4, 6, 5], seed: 22)
        let ws = Workspace.inference()
        let plain = try lin.forward(x, ws)
        let r = BilinearResize(inH: 4, inW: 6, outH: 9, outW: 13)
        let resized = try r.forward(plain)
        let stride = 8, offset = 2
        let wide = Tensor(zeros: [2 * 4 * 6 * stride]); wide.fill(-7)
        try lin.forward(x, ws, into: wide.data + offset, rowStride: stride)
        let wideResized = Tensor(zeros: [2 * 9 * 13 * stride]); wideResized.fill(-7)
        try r.forward(plain, into: wideResized.data + offset, pixelStride: stride)
        for (big, small, pixels) in [(wide, plain, 2 * 4 * 6), (wideResized, resized, 2 * 9 * 13)] {
            for p in 0..<pixels {
                for j in 0..<stride {
                    let v = big.data[p * stride + j]
                    if j >= offset && j < offset + 3 {
                        XCTAssertEqual(v.bitPattern, small.data[p * 3 + j - offset].bitPattern, "pixel \(p) channel \(j)")
                    } else {
                        XCTAssertEqual(v, -7, "pixel \(p) channel \(j) outside the block")
                    }
                }
            }
        }
    }

    func testBilinearResizeMatchesPyTorchValues() throws {
        // F.interpolate(torch.tensor([[[[0., 1.]]]]), size=(1, 4), mode="bilinear", align_corners=False / True)
        let x = try Tensor(shape: [1, 1, 1, 2], values: [0, 1])
        let a = try BilinearResize(inH: 1, inW: 2, outH: 1, outW: 4, alignCorners: false).forwardNCHW(x)
        XCTAssertEqual(a.array, [0, 0.25, 0.75, 1])
        let b = try BilinearResize(inH: 1, inW: 2, outH: 1, outW: 4, alignCorners: true).forwardNCHW(x)
        for (v, e) in zip(b.array, [0, 1.0 / 3, 2.0 / 3, 1] as [Float]) { XCTAssertEqual(v, e, accuracy: 1e-7) }
        // Downsampling 4 -> 3 without align_corners: src = (d + 0.5)·4/3 − 0.5 = 0.1667, 1.5, 2.8333
        let c = try BilinearResize(inH: 1, inW: 4, outH: 1, outW: 3).forwardNCHW(try Tensor(shape: [1, 1, 1, 4], values: [0, 10, 20, 30]))
        for (v, e) in zip(c.array, [1.6666667, 15, 28.333334] as [Float]) { XCTAssertEqual(v, e, accuracy: 1e-5) }
    }

    func testGlobalMaxPool() throws {
        let pool = GlobalMaxPool()
        let x = randomTensor([2, 7, 3], seed: 70)   // distinct values: no ties
        try check.run(inputs: [x], parameters: [], forward: { ws in [try pool.forward(x, ws)] },
                      backward: { d, ws in [try pool.backward(d[0], ws)] })
    }

    func testDropoutModes() throws {
        let x = Tensor(shape: [8, 4, 4, 8], repeating: 1)
        for mode in [Dropout.Mode.elementwise, .channels, .samples] {
            let d = Dropout(rate: 0.5, mode: mode)
            let ws = Workspace(mode: .training, recording: true, rng: RNG(seed: 1))
            let y = d.forward(x, ws)
            XCTAssertTrue(y.array.allSatisfy { $0 == 0 || $0 == 2 }, "\(mode)")
            let kept = y.array.filter { $0 != 0 }.count
            XCTAssertGreaterThan(kept, 0); XCTAssertLessThan(kept, x.count)
            if mode == .channels { XCTAssertEqual(y[0, 0, 0, 3], y[0, 3, 2, 3]) }
            if mode == .samples { for i in 0..<8 { XCTAssertEqual(Set(try y.item(i).array).count, 1) } }
            let dx = try d.backward(Tensor(shape: x.shape, repeating: 1), ws)
            XCTAssertEqual(dx.array, y.array)
            // Same seed, same mask.
            XCTAssertEqual(d.forward(x, Workspace(mode: .training, recording: false, rng: RNG(seed: 1))).array, y.array)
            // Eval mode: identity.
            XCTAssertTrue(d.forward(x, Workspace.inference()) === x)
        }
        let off = Dropout(rate: 0)
        XCTAssertTrue(off.forward(x, Workspace(mode: .training, recording: false)) === x)
    }
}
