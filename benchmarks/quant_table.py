"""Tables for docs/quantization.md from benchmarks/quant_quality.sh outputs (and localai/llama perplexity logs)."""
import os
import re
import sys
M = sys.argv[1] if len(sys.argv) > 1 else "/work/cache/quantk-meas"
def rd(p):
    try: return open(p).read()
    except OSError: return ""
def pm(v, nd):  # "23.049349 ±   1.536756" -> "23.049 ± 1.537"
    a, b = v.split("±")
    return f"{float(a):.{nd}f} ± {float(b):.{nd}f}"
def f(rx, s, g=1):
    m = re.search(rx, s); return m.group(g) if m else None
for model in ["smollm2", "gemma3-270m"]:
    base = rd(f"{M}/{model}.F16.ppl.txt")
    fp = f(r"Final estimate: PPL = ([\d.]+ \+/- [\d.]+)", base)
    sz = os.path.getsize(f"{M}/{model}.F16.gguf") / 2**20 if os.path.exists(f"{M}/{model}.F16.gguf") else 0
    print(f"\n### {model}\nF16: {sz:.1f} MiB, PPL {fp}\n")
    print("| type | size (MiB) ours / llama | tensors | PPL | KLD vs F16 | same top | time (s) ours / llama-quantize | peak RSS (MB) ours / llama |")
    print("|---|---|---|---|---|---|---|---|")
    for t in ["Q8_0", "Q6_K", "Q5_K_M", "Q5_1", "Q5_0", "Q4_K_M", "Q4_K_S", "Q4_1", "Q4_0"]:
        o, l = f"{M}/{model}.{t}.ours", f"{M}/{model}.{t}.llama"
        if not os.path.exists(o + ".ppl.txt") or not os.path.exists(l + ".ppl.txt"): continue
        po, pl = rd(o + ".ppl.txt"), rd(l + ".ppl.txt")
        same = rd(f"{M}/{model}.{t}.same.txt").strip().splitlines()[-1]
        to, tl = rd(o + ".time").split(), rd(l + ".time").split()
        ppl = f(r"Mean PPL\(Q\)\s+:\s+([\d.]+ ±\s+[\d.]+)", po)
        pll = f(r"Mean PPL\(Q\)\s+:\s+([\d.]+ ±\s+[\d.]+)", pl)
        kld = f(r"Mean    KLD:\s+([\d.]+ ±\s+[\d.]+)", po); kll = f(r"Mean    KLD:\s+([\d.]+ ±\s+[\d.]+)", pl)
        st = f(r"Same top p:\s+([\d.]+ ±\s+[\d.]+) %", po); stl = f(r"Same top p:\s+([\d.]+ ±\s+[\d.]+) %", pl)
        ppl, pll = pm(ppl, 3), pm(pll, 3)
        kld, kll = pm(kld, 5), pm(kll, 5)
        st, stl = pm(st, 2), pm(stl, 2)
        pv = ppl if ppl == pll else f"{ppl} / {pll}"
        kv = kld if kld == kll else f"{kld} / {kll}"
        sv = st if st == stl else f"{st} / {stl}"
        print(f"| {t} | {os.path.getsize(o+'.gguf')/2**20:.1f} / {os.path.getsize(l+'.gguf')/2**20:.1f} | {same} | {pv} | {kv} | {sv} % | {float(to[0]):.1f} / {float(tl[0]):.1f} | {int(to[1])/1024:.0f} / {int(tl[1])/1024:.0f} |")
print()
def chunks(s):
    return [float(x) for x in re.findall(r"\[\d+\]([\d.]+),", s)]
for name in ["smollm2.orig", "gemma3-270m.orig", "smollm2.Q4_K_M", "gemma3-270m.Q4_K_M"]:
    ours = rd(f"{M}/{name}.localai-ppl.txt")
    ll = rd(f"{M}/{name}.llama-ppl.txt") if "orig" in name else rd(f"{M}/{name}.ours.ppl.txt")
    if "Final estimate" not in ours or not ll: continue
    a = chunks(ours); 
    if "orig" in name: b = chunks(ll)
    else:
        # the KLD run prints per chunk PPL in its table: running estimates
        b = [float(x) for x in re.findall(r"^\s+\d+\s+([\d.]+) ±", ll, re.M)]
    fo = f(r"Final estimate: PPL = ([\d.]+)", ours); fl = f(r"Final estimate: PPL = ([\d.]+)", ll) or f(r"Mean PPL\(Q\)\s+:\s+([\d.]+)", ll)
    worst = max(abs(x / y - 1) for x, y in zip(a, b)) if a and b else None
    print(f"{name}: localai {fo} llama {fl} diff {100*(float(fo)/float(fl)-1):+.2f}% worst running-estimate diff {100*worst:.2f}%")
    print("  localai", a); print("  llama  ", b)
