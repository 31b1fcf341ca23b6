/// Analytic floating-point operation counts (multiply and add counted separately), for benchmarks.
public enum FLOPCount {
    /// The main forward of `config` on a B×3×H×W input: every GEMM and convolution of the encoder,
    /// the attention products, the SegFormer head and the classifier, plus the depthwise convs.
    /// Element-wise work (norms, activations, softmax, resizes) is not counted.
    public static func forward(_ config: ModelConfig, batch: Int, height: Int, width: Int) -> Double {
        var total = 0.0
        var (h, w, cin) = (height, width, 3)
        var stageHW: [Int] = []
        for s in 0..<4 {
            let k = s == 0 ? 7 : 3, pad = k / 2, stride = config.strides[s]
            h = (h + 2 * pad - k) / stride + 1
            w = (w + 2 * pad - k) / stride + 1
            let c = config.embedDims[s], n = Double(h * w), sr = config.srRatios[s]
            total += 2 * n * Double(c * cin * k * k)                      // patch embed conv
            let m = sr > 1 ? Double((h / sr) * (w / sr)) : n               // keys after spatial reduction
            var block = 2 * n * Double(c * c)                              // q
            if sr > 1 { block += 2 * m * Double(c * c * sr * sr) }          // sr conv
            block += 2 * m * Double(2 * c * c)                             // kv
            block += 2 * 2 * n * m * Double(c)                             // q·kᵀ and p·v over all heads
            block += 2 * n * Double(c * c)                                 // proj
            let hidden = c * config.mlpRatio
            block += 2 * 2 * n * Double(c * hidden) + 2 * 9 * n * Double(hidden)  // fc1, fc2, dwconv
            total += Double(config.depths[s]) * block
            stageHW.append(h * w)
            cin = c
        }
        let e = Double(config.embeddingDim), n1 = Double(stageHW[0])
        for s in 0..<4 { total += 2 * Double(stageHW[s]) * Double(config.embedDims[s]) * e }   // linear_c*
        total += 2 * n1 * 4 * e * e + 2 * n1 * e * Double(config.numClasses)                // fuse, pred
        total += 2 * Double(config.embedDims[3] * (config.numClasses - 1))                  // classifier
        return Double(batch) * total
    }

    /// Forward plus backward: the backward needs two products per forward product (input and weight
    /// gradients), so about three times the forward.
    public static func forwardBackward(_ config: ModelConfig, batch: Int, height: Int, width: Int) -> Double {
        3 * forward(config, batch: batch, height: height, width: width)
    }
}
