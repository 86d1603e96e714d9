import Foundation

// How the metadata stores write values SQL has no type for: a shape as a JSON array, string
// dictionaries (provenance and checkpoint metadata) as JSON objects. One encoding for every
// store, so that their answers are byte-identical.

/// A shape as a JSON array: `[2,3]`.
package func shapeJSON(_ shape: [Int]) -> String { "[" + shape.map(String.init).joined(separator: ",") + "]" }

/// A shape from its JSON array, with or without spaces (PostgreSQL's jsonb prints `[2, 3]`).
package func decodeShape(_ text: String) -> [Int] {
    text.dropFirst().dropLast().split(separator: ",").compactMap { Int($0.trimmingCharacters(in: .whitespaces)) }
}

/// Encodes a string dictionary as a JSON object with sorted keys.
package func encodeJSON(_ dictionary: [String: String]) -> String {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys, .withoutEscapingSlashes]
    return String(decoding: (try? encoder.encode(dictionary)) ?? Data("{}".utf8), as: UTF8.self)
}

/// Decodes a JSON object of strings; anything else decodes as empty.
package func decodeJSON(_ text: String?) -> [String: String] {
    guard let text, let data = text.data(using: .utf8) else { return [:] }
    return (try? JSONDecoder().decode([String: String].self, from: data)) ?? [:]
}
