import ArgumentParser
extension GraftCommand { struct Demo: AsyncParsableCommand { func run() async throws {} } }
