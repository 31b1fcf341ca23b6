import Foundation

/// `afa report`: one self-contained HTML page about a run directory — loss and learning-rate curves,
/// mIoU over iterations, the last evaluation's per-class IoU and confusion matrix, and the pictures
/// of each evaluation. Charts are inline SVG and pictures inline PNG: no scripts, no network.
public struct RunReport {
    public let runDirectory: String
    let recipe: [String: Any]
    let log: [[String: Any]]
    let evals: [[String: Any]]
    /// (iteration, PNG) of `pictures/eval_<n>.png`, oldest first.
    let pictures: [(Int, Data)]

    public init(runDirectory: String) throws {
        self.runDirectory = runDirectory
        let fm = FileManager.default
        guard fm.fileExists(atPath: runDirectory + "/config.json") else {
            throw AFAError.invalidInput("\(runDirectory) is not a run directory (no config.json)")
        }
        recipe = (try? JSONSerialization.jsonObject(with: Data(contentsOf: URL(fileURLWithPath: runDirectory + "/config.json")))) as? [String: Any] ?? [:]
        log = Self.lines(runDirectory + "/log.jsonl")
        evals = Self.lines(runDirectory + "/eval.jsonl")
        let dir = runDirectory + "/pictures"
        pictures = ((try? fm.contentsOfDirectory(atPath: dir)) ?? []).compactMap { f -> (Int, Data)? in
            guard f.hasPrefix("eval_"), f.hasSuffix(".png"), let n = Int(f.dropFirst(5).dropLast(4)),
                  let d = fm.contents(atPath: dir + "/" + f) else { return nil }
            return (n, d)
        }.sorted { $0.0 < $1.0 }
    }

    static func lines(_ path: String) -> [[String: Any]] {
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { return [] }
        return text.split(separator: "\n").compactMap { try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
    }

    /// The page.
    public func html() -> String {
        var body = "<h1>AFA run report</h1>\n<p class=\"sub\">\(escape(runDirectory)) — \(recipeLine())</p>\n"
        body += "<h2>Losses</h2>\n" + chart(series: [("total", "loss"), ("cls", "cls"), ("seg", "seg"), ("aff", "aff")].map { name, k in (name, points(log, k)) },
                                            yLabel: "loss")
        let groups = ["backbone", "backbone_norm", "cls_and_afa_head", "decoder"]
        body += "<h2>Learning rates</h2>\n" + chart(series: groups.enumerated().map { i, g in
            (g, log.compactMap { e -> (Double, Double)? in
                guard let it = e["iter"] as? Int, let lr = e["lr"] as? [Double], i < lr.count else { return nil }
                return (Double(it), lr[i])
            })
        }, yLabel: "learning rate")
        // the target shares of each log window, against the iteration of its line
        let rows = log.compactMap { e -> [String: Any]? in
            guard var l = e["labels"] as? [String: Any] else { return nil }
            l["iter"] = e["iter"]
            return l
        }
        if !rows.isEmpty {
            body += "<h2>Training targets</h2>\n<p class=\"sub\">Share of the pixels each target gives to the background, the foreground and"
                + " \"ignore\" (pseudo label: PAR-refined CAMs; refined: after the random walk, the segmentation target from"
                + " iteration \((recipe["train"] as? [String: Any])?["aff_label_iter"] ?? "?") on), and the share of affinity pairs that are labelled.</p>\n"
            body += chart(series: [("pseudo bg", "pseudo_bg"), ("pseudo fg", "pseudo_fg"), ("pseudo ignored", "pseudo_ignored"),
                                   ("refined bg", "refined_bg"), ("refined fg", "refined_fg"), ("refined ignored", "refined_ignored"),
                                   ("pairs labelled", "pairs_labelled")].map { name, k in
                (name, points(rows, k).map { ($0.0, 100 * $0.1) })
            }, yLabel: "share %")
        }
        body += "<h2>mIoU over iterations</h2>\n"
        if evals.isEmpty {
            body += "<p>No evaluation yet (a run evaluates on its val split every --eval-every iterations).</p>\n"
        } else {
            body += chart(series: [("CAM", "cam_miou"), ("aff", "aff_miou"), ("seg", "seg_miou")].map { name, k in
                (name, points(evals, k).map { ($0.0, 100 * $0.1) })
            }, yLabel: "mIoU %")
        }
        if let last = evals.last { body += lastEvaluation(last) }
        body += "<h2>Pictures</h2>\n"
        if pictures.isEmpty {
            body += "<p>No pictures yet (written at each evaluation).</p>\n"
        } else {
            body += "<p class=\"sub\">Each row: " + RunPictures.legend.joined(separator: " · ") + ".</p>\n"
            for (n, png) in pictures.reversed() {
                body += "<figure><img alt=\"pictures at iteration \(n)\" src=\"data:image/png;base64,\(png.base64EncodedString())\">"
                    + "<figcaption>iteration \(n)</figcaption></figure>\n"
            }
        }
        return """
            <!DOCTYPE html>
            <html lang="en"><head><meta charset="utf-8"><title>AFA run report</title>
            <style>
            body { font: 14px/1.4 system-ui, sans-serif; margin: 24px auto; max-width: 1000px; color: #222; }
            h1 { margin-bottom: 0; } .sub { color: #666; } table { border-collapse: collapse; margin: 8px 0 16px; }
            td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: right; } th:first-child, td:first-child { text-align: left; }
            svg text { font: 11px sans-serif; fill: #444; } figure { margin: 8px 0; } img { image-rendering: pixelated; max-width: 100%; }
            </style></head>
            <body>
            \(body)</body></html>

            """
    }

    /// Writes the page atomically.
    public func write(to path: String) throws { try AtomicFile.write(Data(html().utf8), to: path) }

    func recipeLine() -> String {
        let train = recipe["train"] as? [String: Any] ?? [:]
        var parts = ["preset \(recipe["preset"] ?? "?")", "crop \(recipe["crop_size"] ?? "?")", "batch \(recipe["batch_size"] ?? "?")",
                     "\(recipe["iterations"] ?? "?") iterations", "lr \(train["lr"] ?? "?")", "seed \(recipe["seed"] ?? "?")"]
        if let s = recipe["shards"] as? Int { parts.append("\(s) data-parallel ranks") }
        if let last = log.last?["iter"] as? Int { parts.append("logged up to iteration \(last)") }
        return escape(parts.joined(separator: ", "))
    }

    func points(_ rows: [[String: Any]], _ key: String) -> [(Double, Double)] {
        rows.compactMap { e in
            guard let it = e["iter"] as? Int, let v = e[key] as? Double, v.isFinite else { return nil }
            return (Double(it), v)
        }
    }

    func lastEvaluation(_ e: [String: Any]) -> String {
        let names = e["class_names"] as? [String] ?? []
        let per = e["per_class_iou"] as? [String: [Any]] ?? [:]
        let it = e["iter"] as? Int ?? 0
        func pct(_ v: Any?) -> String { (v as? Double).map { String(format: "%.1f", 100 * $0) } ?? "–" }
        var s = "<h2>Per-class IoU (evaluation at iteration \(it))</h2>\n<table><tr><th>class</th><th>CAM</th><th>aff</th><th>seg</th></tr>\n"
        for (i, n) in names.enumerated() {
            s += "<tr><td>\(escape(n))</td>" + ["cam", "aff", "seg"].map { "<td>\(pct(per[$0].flatMap { i < $0.count ? $0[i] : nil }))</td>" }.joined() + "</tr>\n"
        }
        s += "<tr><th>mIoU</th><th>\(pct(e["cam_miou"]))</th><th>\(pct(e["aff_miou"]))</th><th>\(pct(e["seg_miou"]))</th></tr></table>\n"
        s += String(format: "<p>Classifier F1 %.3f, pixel accuracy %.1f%%, %d images.</p>\n", e["cls_f1"] as? Double ?? 0,
                    100 * (e["pixel_acc"] as? Double ?? 0), e["images"] as? Int ?? 0)
        if let cm = e["seg_confusion"] as? [[Int]], cm.count == names.count {
            s += "<h2>Confusion matrix (segmentation, iteration \(it))</h2>\n<p class=\"sub\">Rows: true class; columns: predicted; "
                + "each row shaded by its share of the row's pixels.</p>\n<table><tr><th></th>" + names.map { "<th>\(escape($0))</th>" }.joined() + "</tr>\n"
            for (i, row) in cm.enumerated() {
                let total = max(row.reduce(0, +), 1)
                s += "<tr><td>\(escape(names[i]))</td>" + row.map { v in
                    let a = Double(v) / Double(total)
                    return String(format: "<td style=\"background: rgba(40, 100, 200, %.2f)\">%d</td>", a * 0.8, v)
                }.joined() + "</tr>\n"
            }
            s += "</table>\n"
        }
        return s
    }

    /// A line chart as inline SVG: one polyline per series, axes with the data's range, a legend.
    func chart(series: [(String, [(Double, Double)])], yLabel: String) -> String {
        let all = series.flatMap(\.1)
        guard !all.isEmpty else { return "<p>No data yet.</p>\n" }
        let (w, h, left, bottom, top, right) = (720.0, 260.0, 64.0, 30.0, 12.0, 130.0)
        let x0 = all.map(\.0).min()!, x1 = max(all.map(\.0).max()!, x0 + 1)
        let y0 = min(all.map(\.1).min()!, 0), y1 = max(all.map(\.1).max()!, y0 + 1e-12)
        func px(_ x: Double) -> Double { left + (x - x0) / (x1 - x0) * (w - left - right) }
        func py(_ y: Double) -> Double { h - bottom - (y - y0) / (y1 - y0) * (h - bottom - top) }
        let colors = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f"]
        var s = "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"\(Int(w))\" height=\"\(Int(h))\" role=\"img\" aria-label=\"\(escape(yLabel))\">\n"
        s += String(format: "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#999\"/>", left, h - bottom, w - right, h - bottom)
        s += String(format: "<line x1=\"%.0f\" y1=\"%.0f\" x2=\"%.0f\" y2=\"%.0f\" stroke=\"#999\"/>\n", left, top, left, h - bottom)
        for k in 0...4 {
            let y = y0 + (y1 - y0) * Double(k) / 4, x = x0 + (x1 - x0) * Double(k) / 4
            s += String(format: "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"end\">%@</text>", left - 4, py(y) + 4, Self.tick(y))
            s += String(format: "<text x=\"%.0f\" y=\"%.0f\" text-anchor=\"middle\">%d</text>\n", px(x), h - bottom + 16, Int(x.rounded()))
        }
        for (i, (name, pts)) in series.enumerated() where !pts.isEmpty {
            let c = colors[i % colors.count]
            let line = pts.map { String(format: "%.1f,%.1f", px($0.0), py($0.1)) }.joined(separator: " ")
            s += "<polyline fill=\"none\" stroke=\"\(c)\" stroke-width=\"1.5\" points=\"\(line)\"/>\n"
            if pts.count == 1 { s += String(format: "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"3\" fill=\"%@\"/>\n", px(pts[0].0), py(pts[0].1), c) }
            s += String(format: "<rect x=\"%.0f\" y=\"%.0f\" width=\"12\" height=\"3\" fill=\"%@\"/><text x=\"%.0f\" y=\"%.0f\">%@</text>\n",
                        w - right + 10, top + 10 + 16 * Double(i), c, w - right + 26, top + 14 + 16 * Double(i), escape(name))
        }
        return s + "</svg>\n"
    }

    static func tick(_ v: Double) -> String {
        v != 0 && (abs(v) < 1e-2 || abs(v) >= 1e4) ? String(format: "%.1e", v) : String(format: "%.3g", v)
    }

    func escape(_ s: String) -> String {
        s.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}
