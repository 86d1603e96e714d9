import GraftCore

/// `GET /healthz`.
struct Health: Codable {
    var status: String
    var version: String
}

func assignments(_ metrics: [String: Double]) throws(GraftError) -> [MetricAssignment] {
    var out: [MetricAssignment] = []
    for (name, value) in metrics.sorted(by: { $0.key < $1.key }) { out.append(try MetricAssignment(name: name, value: value)) }
    return out
}
