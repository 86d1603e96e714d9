import Foundation

// Numbers for people, shared by the CLI's text output and the web view's pages.

/// `1.5 MiB`, `512 B`: binary units, one decimal.
public func formatBytes(_ bytes: Int) -> String {
    let units = ["B", "KiB", "MiB", "GiB", "TiB"]
    var value = Double(bytes)
    var unit = 0
    while value >= 1024, unit < units.count - 1 {
        value /= 1024
        unit += 1
    }
    return unit == 0 ? "\(bytes) B" : String(format: "%.1f", value) + " " + units[unit]
}

/// `1,234,567`.
public func formatCount(_ count: Int) -> String {
    let digits = String(count.magnitude)
    var out = ""
    for (index, character) in digits.enumerated() {
        if index > 0, (digits.count - index) % 3 == 0 { out.append(",") }
        out.append(character)
    }
    return (count < 0 ? "-" : "") + out
}
