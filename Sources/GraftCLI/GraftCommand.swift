import ArgumentParser

@main
struct GraftCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "graft",
        abstract: "A checkpoint and model registry for transfer learning.",
        discussion: """
            The registry lives in --registry PATH, else $GRAFT_REGISTRY, else ./registry.
            Exit codes are listed in docs/CLI.md.
            """,
        subcommands: [
            Init.self, Base.self, Student.self, List.self, Show.self, CheckpointCommand.self, Diff.self, Tag.self, Untag.self,
            Metric.self, Metrics.self, Best.self, Lineage.self, AdvisoryCommand.self, Affected.self, ExposureCommand.self, Card.self,
            Export.self, Sign.self, VerifySignature.self, Verify.self, Backup.self, Copy.self, Stats.self, Compact.self, GC.self,
            Prune.self,
            ModelCommand.self,
            Train.self,
            Demo.self, Serve.self, Token.self,
        ]
    )
}
