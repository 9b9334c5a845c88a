"""enc2.py NAME key=val ... : encoder variants. Options:
steps batch lr wc(contrastive wt) wb(BCE wt) head(pool|mil|both) abs(0/1) stem(patch|conv) patch embed aug(0/1) n(train imgs)"""
import torch, time, pickle, sys, math, json
import torch.nn as nn, torch.nn.functional as F
torch.set_num_threads(1)
from transformers import SwinModel
from xraygpt_lab.models.encoder import EncoderConfig, VisionEncoder
from xraygpt_lab.models.text_encoder import TextEncoder
from xraygpt_lab.train.contrastive import medclip_loss, LogitScale
from xraygpt_lab.train.walkthrough import laterality_labels
name=sys.argv[1]; o=dict(steps=250,batch=32,lr=2e-3,wc=1.0,wb=1.0,head="pool",abs=1,stem="patch",patch=8,embed=32,aug=0,timing=0,pw=0,stemc=16)
for a in sys.argv[2:]:
    k,v=a.split("="); o[k]=type(o[k])(v) if not isinstance(o[k],str) else v
print(name,o,flush=True)
D=pickle.load(open("/tmp/h9/data.pkl","rb")); s1,ev=D["s1"],D["ev"]
Y=laterality_labels(s1.findings); Ye=laterality_labels(ev.findings)
torch.manual_seed(0)
cfg=EncoderConfig.tiny(128); cfg.patch_size=o["patch"]; cfg.embed_dim=o["embed"]
if o["patch"]==4: cfg.depths=[2,2,2,2]; cfg.num_heads=[2,4,8,16]
enc=VisionEncoder(cfg)
sc=cfg.to_swin_config(); sc.use_absolute_embeddings=bool(o["abs"]); enc.backbone=SwinModel(sc)
if o["stem"]=="conv":
    E=o["embed"]; assert o["patch"]==8
    enc.backbone.embeddings.patch_embeddings.projection=nn.Sequential(
        nn.Conv2d(1,o["stemc"],3,2,1), nn.GELU(), nn.Conv2d(o["stemc"],E,3,2,1), nn.GELU(), nn.Conv2d(E,E,2,2))
d=cfg.token_dim; L=Y.shape[1]
head=nn.Linear(cfg.projection_dim, L); thead=nn.Linear(d, L)
te=TextEncoder.from_corpus(s1.summaries); scale=LogitScale()
params=list(enc.parameters())+list(te.parameters())+list(scale.parameters())+list(head.parameters())+list(thead.parameters())
pwt=((1-Y.mean(0))/Y.mean(0)).clamp(max=10)**0.5 if o["pw"] else None
opt=torch.optim.AdamW(params,lr=o["lr"],weight_decay=0.05)
tok=te.tokenize(s1.summaries); B=o["batch"]; n=len(s1.summaries); steps=o["steps"]
t0=time.time(); c0=time.process_time()
for step in range(steps):
    LR=o["lr"]; lr=LR*(0.1+0.9*0.5*(1+math.cos(math.pi*step/steps))) if step>10 else LR*(step+1)/10
    for g in opt.param_groups: g["lr"]=lr
    idx=torch.randint(0,n,(B,)); x=s1.pixels[idx]
    if o["aug"]:  # small random translation (+-4 px) and intensity jitter; no flips (laterality!)
        dx,dy=torch.randint(-4,5,(2,)).tolist(); x=torch.roll(x,(dy,dx),(2,3))
        x=x*(1+0.1*torch.randn(B,1,1,1))+0.1*torch.randn(B,1,1,1)
    out=enc(x); loss=0.
    if o["wc"]>0:
        m=tok["attention_mask"][idx]; Lm=int(m.sum(1).max())
        temb=te(tok["input_ids"][idx,:Lm], m[:,:Lm]); lab=2*Y[idx]-1
        loss=loss+o["wc"]*medclip_loss(out.embedding,temb,scale(),lab,lab)
    if o["wb"]>0:
        if o["head"] in ("pool","both"):
            loss=loss+o["wb"]*F.binary_cross_entropy_with_logits(head(enc.projection(out.pooled)),Y[idx],pos_weight=pwt)
        if o["head"] in ("mil","both"):
            lt=thead(out.tokens)  # [B,N,L]
            lg=torch.logsumexp(lt,1)-math.log(lt.shape[1])+2.0
            loss=loss+o["wb"]*F.binary_cross_entropy_with_logits(lg,Y[idx])
    opt.zero_grad(); loss.backward(); opt.step(); scale.clamp_()
    if step%50==0: print(step, round(loss.item(),3), round(time.time()-t0), round(time.process_time()-c0,1), flush=True)
    if o["timing"] and step==o["timing"]: print("cpu s/step",(time.process_time()-c0)/(step+1)); sys.exit()
cpu=time.process_time()-c0
print("train wall",round(time.time()-t0),"cpu",round(cpu,1),flush=True)
enc.eval()
with torch.no_grad():
    Ttr=torch.cat([enc.encode_tokens(s1.pixels[i:i+100]) for i in range(0,n,100)])
    Tev=torch.cat([enc.encode_tokens(ev.pixels[i:i+100]) for i in range(0,200,100)])
def probe(Ftr,Fev,iters=300):
    mu,sd=Ftr.mean(0),Ftr.std(0)+1e-5; Ftr=(Ftr-mu)/sd; Fev=(Fev-mu)/sd
    torch.manual_seed(0); p=nn.Linear(Ftr.shape[1],L); op=torch.optim.Adam(p.parameters(),lr=1e-2,weight_decay=1e-3)
    for i in range(iters):
        l=F.binary_cross_entropy_with_logits(p(Ftr),Y); op.zero_grad(); l.backward(); op.step()
    with torch.no_grad(): return (p(Fev)>0).float()
def f1(P,T):
    tp=(P*T).sum(); fp=(P*(1-T)).sum(); fn=((1-P)*T).sum(); return float(2*tp/(2*tp+fp+fn+1e-9))
COLS=["Card","PE","PE","PTX","PTX","Cons","Cons","Les","Les","Edema","Atel","Atel","SD","Frac","Frac"]
def report(tag,P):
    col=[round(f1(P[:,j],Ye[:,j]),2) for j in range(L)]
    obs={}
    for c in dict.fromkeys(COLS):
        js=[j for j in range(L) if COLS[j]==c]; obs[c]=round(f1(P[:,js].max(1).values,Ye[:,js].max(1).values),2)
    print(tag,"cols macro",round(sum(col)/L,3),"| obs macro",round(sum(obs.values())/len(obs),3),obs,flush=True)
with torch.no_grad(): report("ownhead",(head(enc.projection(Tev.mean(1)))>0).float())
report("flatprobe",probe(Ttr.flatten(1),Tev.flatten(1)))
report("meanprobe",probe(Ttr.mean(1),Tev.mean(1)))
torch.save(enc.state_dict(), f"/tmp/h9/enc_{name}.pt"); json.dump(o,open(f"/tmp/h9/enc_{name}.json","w"))
