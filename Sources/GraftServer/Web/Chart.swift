import Foundation

/// One line of a chart: a label and its points, in x order.
struct ChartSeries: Sendable {
    var label: String
    var x: [Double]
    var y: [Double]
}

/// A line chart drawn on the server as inline SVG: no script, no assets. Each series is one
/// `<g class="series">` (with `data-series`, its label), so a page reads without JavaScript and
/// a test can count the series. A series of more than `maximumPoints` points is thinned to the
/// minimum and maximum of each of `maximumPoints / 2` buckets: the drawing stays bounded
/// whatever the curve's length, and spikes survive.
struct LineChart {
    var title: String
    var xLabel: String
    var series: [ChartSeries]
    static let maximumPoints = 1000
    static let (width, height) = (640.0, 240.0)
    static let (left, right, top, bottom) = (56.0, 12.0, 12.0, 32.0)

    var markup: Markup {
        let drawn = series.map { Self.thinned($0) }
        let xs = drawn.flatMap(\.x).filter(\.isFinite), ys = drawn.flatMap(\.y).filter(\.isFinite)
        guard let x0 = xs.min(), let x1 = xs.max(), let y0 = ys.min(), let y1 = ys.max() else {
            return "<p class=\"muted\">\(title): no points.</p>"
        }
        let (xLow, xHigh) = Self.padded(x0, x1)
        let (yLow, yHigh) = Self.padded(y0, y1)
        let plotWidth = Self.width - Self.left - Self.right, plotHeight = Self.height - Self.top - Self.bottom
        func px(_ x: Double) -> String { String(format: "%.1f", Self.left + (x - xLow) / (xHigh - xLow) * plotWidth) }
        func py(_ y: Double) -> String { String(format: "%.1f", Self.top + (1 - (y - yLow) / (yHigh - yLow)) * plotHeight) }

        var svg = Markup(raw: "")
        svg += "<svg class=\"chart\" viewBox=\"0 0 \(Int(Self.width)) \(Int(Self.height))\" role=\"img\" aria-label=\"\(title)\">"
        // Axes and ticks.
        svg +=
            """
            <g class=\"axis\"><line x1=\"\(Markup(raw: px(xLow)))\" y1=\"\(Markup(raw: py(yLow)))\" x2=\"\(Markup(raw: px(xHigh)))\"\
             y2=\"\(Markup(raw: py(yLow)))\"/>
            """
        svg +=
            """
            <line x1=\"\(Markup(raw: px(xLow)))\" y1=\"\(Markup(raw: py(yLow)))\" x2=\"\(Markup(raw: px(xLow)))\"\
             y2=\"\(Markup(raw: py(yHigh)))\"/>
            """
        for y in Self.ticks(yLow, yHigh) {
            svg +=
                """
                <line class=\"grid\" x1=\"\(Markup(raw: px(xLow)))\" x2=\"\(Markup(raw: px(xHigh)))\" y1=\"\(Markup(raw: py(y)))\"\
                 y2=\"\(Markup(raw: py(y)))\"/>
                """
            svg +=
                """
                <text x=\"\(Int(Self.left) - 6)\" y=\"\(Markup(raw: py(y)))\" text-anchor=\"end\"\
                 dominant-baseline=\"middle\">\(Self.tickLabel(y))</text>
                """
        }
        for x in Self.ticks(xLow, xHigh) {
            svg +=
                """
                <text x=\"\(Markup(raw: px(x)))\" y=\"\(Int(Self.height - Self.bottom) + 16)\"\
                 text-anchor=\"middle\">\(Self.tickLabel(x))</text>
                """
        }
        svg +=
            """
            <text class=\"label\" x=\"\(Markup(raw: px((xLow + xHigh) / 2)))\" y=\"\(Int(Self.height) - 2)\"\
             text-anchor=\"middle\">\(xLabel)</text></g>
            """
        for (index, line) in drawn.enumerated() {
            let points = zip(line.x, line.y).filter { $0.0.isFinite && $0.1.isFinite }.map { px($0.0) + "," + py($0.1) }.joined(
                separator: " ")
            svg += "<g class=\"series s\(index % 8)\" data-series=\"\(line.label)\"><title>\(line.label)</title>"
            svg += "<polyline fill=\"none\" points=\"\(Markup(raw: points))\"/>"
            // Few points (checkpoint metrics): a dot on each, with its value on hover.
            if line.x.count <= 60 {
                for (x, y) in zip(line.x, line.y) where x.isFinite && y.isFinite {
                    svg +=
                        """
                        <circle cx=\"\(Markup(raw: px(x)))\" cy=\"\(Markup(raw: py(y)))\" r=\"3\"><title>\(line.label):\
                         \(Self.tickLabel(x)), \(Self.valueLabel(y))</title></circle>
                        """
                }
            }
            svg += "</g>"
        }
        svg += "</svg>"
        let legend = drawn.enumerated().map { index, line in Markup("<li class=\"s\(index % 8)\">\(line.label)</li>") }.joined()
        return "<figure class=\"chart\"><figcaption>\(title)</figcaption>\(svg)<ul class=\"legend\">\(legend)</ul></figure>"
    }

    /// A range with room around it (a flat line gets one).
    static func padded(_ low: Double, _ high: Double) -> (Double, Double) {
        if low == high { return low == 0 ? (-1, 1) : (low - abs(low) * 0.05, high + abs(high) * 0.05) }
        let margin = (high - low) * 0.04
        return (low - margin, high + margin)
    }

    /// Round tick values (1, 2 or 5 times a power of ten apart) inside `low...high`, about five.
    static func ticks(_ low: Double, _ high: Double) -> [Double] {
        let raw = (high - low) / 5
        guard raw > 0, raw.isFinite else { return [low] }
        let power = pow(10, floor(log10(raw)))
        let step = [1.0, 2, 5, 10].map { $0 * power }.first { $0 >= raw } ?? 10 * power
        var values: [Double] = []
        var value = (low / step).rounded(.up) * step
        while value <= high, values.count < 12 {
            values.append(abs(value) < step / 1e6 ? 0 : value)
            value += step
        }
        return values
    }

    static func tickLabel(_ value: Double) -> String {
        if value == value.rounded(), abs(value) < 1e9 { return String(Int(value)) }
        return String(format: "%.4g", value)
    }

    static func valueLabel(_ value: Double) -> String { String(format: "%.6g", value) }

    /// At most `maximumPoints` points: the minimum and maximum of each bucket, in x order.
    static func thinned(_ series: ChartSeries) -> ChartSeries {
        let count = series.x.count
        guard count > maximumPoints else { return series }
        let buckets = maximumPoints / 2
        var out = ChartSeries(label: series.label, x: [], y: [])
        out.x.reserveCapacity(maximumPoints)
        out.y.reserveCapacity(maximumPoints)
        for bucket in 0..<buckets {
            let range = (bucket * count / buckets)..<((bucket + 1) * count / buckets)
            guard !range.isEmpty else { continue }
            var (low, high) = (range.lowerBound, range.lowerBound)
            for index in range {
                if series.y[index] < series.y[low] { low = index }
                if series.y[index] > series.y[high] { high = index }
            }
            for index in Set([low, high]).sorted() {
                out.x.append(series.x[index])
                out.y.append(series.y[index])
            }
        }
        return out
    }
}
