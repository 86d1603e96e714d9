import Foundation
import Graft
import GraftTestSupport
import Testing

/// What `--json` prints decodes back into the library's own types with ``GraftJSON``: the
/// contract a server and its clients will share.
@Suite("The JSON contract")
struct JSONContractTests {
    @Test("--json output of import, show, checkpoint list, best, lineage, affected and stats decodes into the library's types")
    func roundTrip() throws {
        let cli = CLI()
        #expect(try cli.run(["init"]).status == 0)
        let base = try cli.base()
        let decoder = GraftJSON.decoder()
        func decode<T: Decodable>(_ type: T.Type, _ arguments: [String]) throws -> T {
            let output = try cli.run(arguments + ["--json"])
            guard output.status == 0 else { throw HelperError("graft \(arguments): \(output.stderr)") }
            return try decoder.decode(T.self, from: Data(output.stdout.utf8))
        }
        let imported = try decode(ImportResult.self, ["base", "add", base, "--name", "cnn"])
        #expect(imported.checkpoint == "cnn@1" && imported.digest.hex.count == 64)
        #expect(try cli.run(["student", "create", "ft", "--from", "cnn@1", "--freeze", "features"]).status == 0)
        let committed = try decode(ImportResult.self, ["checkpoint", "add", "ft", try headVariant(cli, 1), "--metric", "acc=0.5"])
        #expect(committed.checkpoint == "ft@1" && committed.bytesStored > 0 && committed.bytesStored < committed.logicalBytes)
        let checkpoints = try decode([CheckpointSummary].self, ["checkpoint", "list", "ft"])
        #expect(checkpoints.map(\.ref) == ["ft@1"] && checkpoints[0].digest == committed.digest)
        let detail = try decode(CheckpointDetail.self, ["show", "cnn@1"])
        #expect(detail.checkpoint.digest == imported.digest && !detail.layers.isEmpty)
        let best = try decode(BestResult.self, ["best", "--metric", "acc"])
        #expect(best.checkpoint.ref == "ft@1" && best.value == 0.5 && best.direction == .max)
        let lineage = try decode(LineageReport.self, ["lineage", "cnn"])
        #expect(lineage.descendants.map(\.name) == ["ft"] && lineage.descendants[0].parent == "cnn@1")
        #expect(try cli.run(["advisory", "add", "cnn", "--id", "A-1", "--severity", "low"]).status == 0)
        let affected = try decode([AffectedModel].self, ["affected", "cnn"])
        #expect(affected.map(\.model) == ["ft"] && affected[0].advisories == ["A-1"])
        // What the CLI printed decodes, and encodes back key for key.
        let printed = Data(try cli.run(["stats", "--json"]).stdout.utf8)
        let stats = try decoder.decode(RegistryStats.self, from: printed)
        #expect(stats.models == 2 && stats.checkpoints == 2)
        let again = try JSONSerialization.jsonObject(with: try GraftJSON.encoder().encode(stats)) as? NSDictionary
        #expect(again == (try JSONSerialization.jsonObject(with: printed) as? NSDictionary))
    }
}
