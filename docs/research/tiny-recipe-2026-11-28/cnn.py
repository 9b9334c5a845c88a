"""cnn.py NAME key=val: small CNN -> 4x4x128 tokens, supervised BCE (sanity / alternative)."""
import torch, time, pickle, sys, math
import torch.nn as nn, torch.nn.functional as F
torch.set_num_threads(1)
from xraygpt_lab.train.walkthrough import laterality_labels
name=sys.argv[1]; o=dict(steps=300,batch=32,lr=2e-3,pw=1,pwe=0.5,w=16,timing=0,pool="mean",aug=0)
for a in sys.argv[2:]:
    k,v=a.split("="); o[k]=type(o[k])(v)
print(name,o,flush=True)
D=pickle.load(open("/tmp/h9/data.pkl","rb")); s1,ev=D["s1"],D["ev"]
Y=laterality_labels(s1.findings); Ye=laterality_labels(ev.findings); L=Y.shape[1]
torch.manual_seed(0); w=o["w"]
def blk(i,j): return [nn.Conv2d(i,j,3,2,1), nn.BatchNorm2d(j), nn.GELU(), nn.Conv2d(j,j,3,1,1), nn.BatchNorm2d(j), nn.GELU()]
net=nn.Sequential(*blk(1,w),*blk(w,2*w),*blk(2*w,4*w),*blk(4*w,8*w),*blk(8*w,128))  # 128->4
head=nn.Linear(128,L)
pwt=((1-Y.mean(0))/Y.mean(0)).clamp(max=15)**o["pwe"] if o["pw"] else None
opt=torch.optim.AdamW(list(net.parameters())+list(head.parameters()),lr=o["lr"],weight_decay=0.05)
n=1000; B=o["batch"]; steps=o["steps"]; t0=time.time(); c0=time.process_time()
def tokens(x): return net(x).flatten(2).transpose(1,2)  # [B,16,128]
for step in range(steps):
    LR=o["lr"]; lr=LR*(0.1+0.9*0.5*(1+math.cos(math.pi*step/steps))) if step>10 else LR*(step+1)/10
    for g in opt.param_groups: g["lr"]=lr
    idx=torch.randint(0,n,(B,)); x=s1.pixels[idx]
    if o["aug"]:
        dx,dy=torch.randint(-4,5,(2,)).tolist(); x=torch.roll(x,(dy,dx),(2,3))
    t=tokens(x); lt=head(t)
    lg=lt.mean(1) if o["pool"]=="mean" else torch.logsumexp(lt,1)-math.log(16)
    loss=F.binary_cross_entropy_with_logits(lg,Y[idx],pos_weight=pwt)
    opt.zero_grad(); loss.backward(); opt.step()
    if step%50==0: print(step, round(loss.item(),3), round(time.time()-t0), round(time.process_time()-c0,1), flush=True)
    if o["timing"] and step==o["timing"]: print("cpu s/step",(time.process_time()-c0)/(step+1)); sys.exit()
print("train wall",round(time.time()-t0),"cpu",round(time.process_time()-c0,1),flush=True)
net.eval()
with torch.no_grad():
    Tev=torch.cat([tokens(ev.pixels[i:i+100]) for i in range(0,200,100)]); lt=head(Tev)
    lg=lt.mean(1) if o["pool"]=="mean" else torch.logsumexp(lt,1)-math.log(16)
def f1(P,T):
    tp=(P*T).sum(); fp=(P*(1-T)).sum(); fn=((1-P)*T).sum(); return float(2*tp/(2*tp+fp+fn+1e-9))
COLS=["Card","PE","PE","PTX","PTX","Cons","Cons","Les","Les","Edema","Atel","Atel","SD","Frac","Frac"]
P=(lg>0).float(); col=[round(f1(P[:,j],Ye[:,j]),2) for j in range(L)]; obs={}
for c in dict.fromkeys(COLS):
    js=[j for j in range(L) if COLS[j]==c]; obs[c]=round(f1(P[:,js].max(1).values,Ye[:,js].max(1).values),2)
print("ownhead cols macro",round(sum(col)/L,3),col,"| obs macro",round(sum(obs.values())/len(obs),3),obs,flush=True)
torch.save({"net":net.state_dict(),"head":head.state_dict(),"o":o}, f"/tmp/h9/cnn_{name}.pt")
