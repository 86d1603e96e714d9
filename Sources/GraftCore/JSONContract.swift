public import Foundation

/// The JSON contract: how the library's result types (``CheckpointSummary``, ``BestResult``,
/// ``LineageReport``, ``ImportResult``, …) are written and read, with snake_case keys, as
/// docs/JSON.md documents them. The CLI's `--json` writes with ``encoder(pretty:)``; a server
/// sends the same bytes and a client reads them back with ``decoder()``.
public enum GraftJSON {
    /// Sorted snake_case keys, slashes unescaped; `pretty` for people (the CLI's `--json`).
    public static func encoder(pretty: Bool = false) -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.outputFormatting =
            pretty ? [.prettyPrinted, .sortedKeys, .withoutEscapingSlashes] : [.sortedKeys, .withoutEscapingSlashes]
        encoder.keyEncodingStrategy = .convertToSnakeCase
        return encoder
    }

    /// Reads what ``encoder(pretty:)`` wrote back into the library's types.
    public static func decoder() -> JSONDecoder {
        let decoder = JSONDecoder()
        decoder.keyDecodingStrategy = .convertFromSnakeCase
        return decoder
    }
}
