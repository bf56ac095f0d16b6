// Bundles the tiny frontend (src/client) into dist/public and writes index.html
// next to it (small inline plugin instead of html-webpack-plugin, to keep deps few).
const path = require("path");
const { sources } = require("webpack");

const INDEX_HTML = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <title>S4</title>
  <style>body{font-family:sans-serif;max-width:48rem;margin:2rem auto;padding:0 1rem}</style>
</head>
<body>
  <div id="app">Loading…</div>
  <script src="app.js"></script>
</body>
</html>
`;

class EmitIndexHtml {
  apply(compiler) {
    compiler.hooks.thisCompilation.tap("EmitIndexHtml", (compilation) => {
      compilation.hooks.processAssets.tap(
        { name: "EmitIndexHtml", stage: compilation.constructor.PROCESS_ASSETS_STAGE_ADDITIONAL },
        () => compilation.emitAsset("index.html", new sources.RawSource(INDEX_HTML)),
      );
    });
  }
}

module.exports = {
  entry: "./src/client/index.ts",
  output: {
    path: path.resolve(__dirname, "dist/public"),
    filename: "app.js",
    clean: true,
  },
  resolve: { extensions: [".ts", ".js"] },
  module: {
    rules: [
      {
        test: /\.ts$/,
        loader: "ts-loader",
        options: { configFile: "tsconfig.client.json" },
        exclude: /node_modules/,
      },
    ],
  },
  plugins: [new EmitIndexHtml()],
  performance: { hints: false },
};
