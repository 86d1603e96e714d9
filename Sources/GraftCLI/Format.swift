import Foundation
import Graft

/// Writes `value` in the library's JSON contract (``GraftJSON``), pretty, followed by a newline.
func printJSON(_ value: some Encodable) throws {
    let data = try GraftJSON.encoder(pretty: true).encode(value)
    FileHandle.standardOutput.write(data + Data("\n".utf8))
}

/// Left-aligned columns separated by two spaces; numeric columns given in `right` align right.
func table(_ header: [String], _ rows: [[String]], right: Set<Int> = []) -> String {
    let all = [header] + rows
    let widths = header.indices.map { column in all.map { $0[column].count }.max() ?? 0 }
    return all.map { row in
        row.enumerated().map { column, cell in
            let pad = String(repeating: " ", count: widths[column] - cell.count)
            return right.contains(column) ? pad + cell : (column == row.count - 1 ? cell : cell + pad)
        }.joined(separator: "  ")
    }.joined(separator: "\n")
}

func shapeText(_ shape: [Int]) -> String { "[" + shape.map(String.init).joined(separator: ", ") + "]" }
