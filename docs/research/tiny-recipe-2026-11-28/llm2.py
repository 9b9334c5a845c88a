"""llm2.py NAME key=val: tiny LLM with grounded slot examples. Options:
steps batch lr g(grounded fraction) slot(rand|spatial) nblank evaln"""
import torch, time, pickle, sys, random, json
torch.set_num_threads(1)
from xraygpt_lab.models.llm import train_tokenizer, tiny_llm, save_llm
from xraygpt_lab.models.conversation import xraygpt_prompt, END_SYM
from xraygpt_lab.train.llm_finetune import domain_finetune
from xraygpt_lab.train.schedule import StageConfig
from xraygpt_lab.train.walkthrough import llm_examples, _instructions
from xraygpt_lab.data.instructions import ALIGNMENT_INSTRUCTIONS
from xraygpt_lab.data.findings import RENDERED_OBSERVATIONS
from xraygpt_lab.data.labeler import label_report
from xraygpt_lab.eval.metrics import clinical_efficacy, rouge
from xraygpt_lab.config import TINY
name=sys.argv[1]; o=dict(steps=400,batch=16,lr=3e-3,g=0.5,evaln=100,blank=1,conv=1)
for a in sys.argv[2:]:
    k,v=a.split("="); o[k]=type(o[k])(v)
print(name,o,flush=True)
D=pickle.load(open("/tmp/h9/data.pkl","rb")); s1,ev=D["s1"],D["ev"]
LAT=("Pleural Effusion","Pneumothorax","Consolidation","Lung Lesion","Atelectasis","Fracture")
def cname(o_,s=None): return "<"+o_.lower().replace(" ","_")+(f"_{s}" if s else "")+">"
CONCEPTS=[cname(x,s) for x in RENDERED_OBSERVATIONS if x!="No Finding" for s in (("left","right") if x in LAT else (None,))]
BLANK="<blank>"
def slot(findings, rng, n=16):
    toks=[]
    for f in findings:
        c=cname(f.observation, f.side if f.observation in LAT and f.side in ("left","right") else None)
        toks += [c]*rng.randint(1,3)
    toks=toks[:n]; toks += [BLANK]*(n-len(toks)); rng.shuffle(toks); return "".join(toks)
rng=random.Random(0)
base=llm_examples(s1.conversations, 0) if o["conv"] else []
grounded=[]
for findings,summ in zip(s1.findings,s1.summaries):
    for _ in range(8):
        p=xraygpt_prompt(rng.choice(ALIGNMENT_INSTRUCTIONS)).replace("<ImageHere>", slot(findings,rng))
        grounded.append((p, summ+END_SYM))
g=o["g"]
if base and g<1:
    k=int(len(base)*g/(1-g)); mix=base+[grounded[i%len(grounded)] for i in range(k)]
else: mix=grounded
print(len(base),len(grounded),len(mix),flush=True)
corpus=[p+a for p,a in llm_examples(s1.conversations,0)]+[xraygpt_prompt(q) for q in _instructions()]
tok=train_tokenizer(corpus, vocab_size=1024)
tok.add_tokens(CONCEPTS+[BLANK], special_tokens=True)
sizes={k:v for k,v in TINY.llm.items() if k!="vocab_size"}
llm=tiny_llm(tok, seed=0, **sizes)
st=StageConfig(name="llm",steps=o["steps"],batch_size=o["batch"],init_lr=o["lr"],min_lr=o["lr"]/10,warmup_lr=1e-4,warmup_steps=20,seed=0,save_every=10**6)
t=time.time(); c=time.process_time()
r=domain_finetune(llm,tok,mix,st,None,progress=False)
print("llm train wall",round(time.time()-t),"cpu",round(time.process_time()-c,1), r.history[0]["loss"], r.history[-1]["loss"],flush=True)
save_llm(llm,tok,f"/tmp/h9/llm_{name}")
llm.eval()
def gen(prompts):
    tok.padding_side="left"
    outs=[]
    for i in range(0,len(prompts),25):
        ids=tok(prompts[i:i+25],return_tensors="pt",padding=True)
        with torch.no_grad(): out=llm.generate(**ids,max_new_tokens=140,do_sample=False,pad_token_id=tok.pad_token_id)
        for row in out[:,ids["input_ids"].shape[1]:]:
            txt=tok.decode(row,skip_special_tokens=False).split("###")[0]
            outs.append(tok.decode(tok(txt,add_special_tokens=False)["input_ids"],skip_special_tokens=True).strip())
    return outs
N=o["evaln"]; obs=list(RENDERED_OBSERVATIONS)
refl=[label_report(s) for s in ev.summaries[:N]]
P=[xraygpt_prompt("Describe the given chest x-ray image in detail.").replace("<ImageHere>", slot(f,rng)) for f in ev.findings[:N]]
preds=gen(P)
ce=clinical_efficacy([label_report(p) for p in preds],refl,obs)
print("ORACLE CE macro",round(ce["macro_f1"],3),"rougeL",round(rouge(preds,ev.summaries[:N])["rougeL"],3),{k[:6]:round(v["f1"] or 0,2) for k,v in ce["per_observation"].items()},flush=True)
bp=gen([xraygpt_prompt("Describe the given chest x-ray image in detail.").replace("<ImageHere>", BLANK*16)])
print("BLANK-slot report:",bp[0]); print("pred0:",preds[0]); print("ref0:",ev.summaries[0])
