--[[
course.lua: what this course needs beyond Quarto's documented built-ins, for every
output format, under Quarto and under the Quarto-free build alike.

Quarto runs it because `_quarto.yml` names it under `filters:`; user filters run
before Quarto's own (https://quarto.org/docs/extensions/filters.html, "Activating
Filters"). The Quarto-free build runs it at the same point, before its emulation of
Quarto's built-ins (tools/coursebuild/quarto.lua). It uses only pandoc's Lua API and
the global FORMAT, so it also runs, and is tested, under plain pandoc.

  * speaker notes (.notes) and pauses (". . .") are kept for reveal.js only: pandoc's
    other writers print them as text (Quarto handles them for reveal.js only,
    quarto-cli issue #4189);
  * the shared macro file's `\newcommand` lines and HTML comments are dropped once
    pandoc's latex_macros extension has applied them to the math: otherwise they are
    raw blocks that make an empty slide (quarto-cli issue #2514) and raw notebook cells;
  * for notebooks (ipynb), callouts are unwrapped into a bold title and their content,
    so that code inside a callout (a lab's worked solution) becomes a runnable code
    cell; the cells of a folded callout are marked source_hidden, as the page folds
    them. (pandoc's ipynb writer makes code cells only from top-level cells.)
  * links to the week's code page (code.qmd) are kept on the web only: a handout or a
    notebook shows the function's name without a link;
  * for handouts (typst), the house style (slides/handout.typ) is placed at the start
    of the body, after a `course` dictionary with the course's title from the project
    metadata (`course: title/short-title`) and the palette from slides/palette.scss;
  * a week's web pages link back to the home page and to the week's other materials
    (`week-links: true`, set for every week in lectures/_metadata.yml): a bar at the top
    of a lab or code page, a closing slide in a deck. Every week lives in
    `lectures/NN-topic/` with the same file names, so the links are fixed relative paths.
]]

local ROOT = pandoc.path.directory(pandoc.path.directory(PANDOC_SCRIPT_FILE))

local function read_file(...)
  local path = pandoc.path.join({ ROOT, ... })
  local f = io.open(path, "r")
  if not f then error("course.lua: cannot read " .. path) end
  local text = f:read("a")
  f:close()
  return text
end

local function is_reveal() return FORMAT == "revealjs" end

local function stringify(x) return pandoc.utils.stringify(x) end

------------------------------------------------------------------------
-- notes and pauses outside reveal.js; macro definitions and comments everywhere
------------------------------------------------------------------------
local function is_pause(block)
  if block.t ~= "Para" or #block.content ~= 5 then return false end
  return stringify(block):gsub("%s", "") == "..."
end

local function drop_slide_only(blocks)
  if is_reveal() then return nil end
  local out = pandoc.Blocks({})
  local changed = false
  for _, b in ipairs(blocks) do
    if is_pause(b) or (b.t == "Div" and b.classes:includes("notes")) then
      changed = true
    else
      out:insert(b)
    end
  end
  if changed then return out end
  return nil
end

local function drop_definitions(raw)
  if (raw.format == "tex" or raw.format == "latex") and raw.text:match("^%s*\\[re]*newcommand") then
    return {}
  end
  if raw.format == "html" and raw.text:match("^%s*<!%-%-.*%-%->%s*$") then
    return {}
  end
  return nil
end

------------------------------------------------------------------------
-- notebooks: callouts unwrapped, so that their code is a code cell
------------------------------------------------------------------------
local CALLOUT_TITLES = {
  note = "Note", tip = "Tip", warning = "Warning", important = "Important", caution = "Caution",
}

local function callout_kind(div)
  for _, c in ipairs(div.classes) do
    local k = c:match("^callout%-(%a+)$")
    if k and CALLOUT_TITLES[k] then return k end
  end
  return nil
end

local function is_code_cell(div)
  return div.classes:includes("cell")
end

local function unwrap_callout(div)
  if FORMAT ~= "ipynb" then return nil end
  local kind = callout_kind(div)
  if not kind then return nil end
  local content = pandoc.Blocks(div.content)
  local title
  if div.attributes["title"] then
    title = pandoc.utils.blocks_to_inlines(pandoc.read(div.attributes["title"], "markdown").blocks)
  elseif #content > 0 and content[1].t == "Header" then
    title = content[1].content
    content:remove(1)
  else
    title = pandoc.Inlines({ pandoc.Str(CALLOUT_TITLES[kind]) })
  end
  local folded = div.attributes["collapse"] == "true"
  local out = pandoc.Blocks({ pandoc.Para({ pandoc.Strong(title) }) })
  for _, b in ipairs(content) do
    if b.t == "CodeBlock" and (b.classes:includes("python") or b.classes:includes("cell-code")) then
      -- Quarto's own code blocks before execution: make them a cell
      b = pandoc.Div({ b }, pandoc.Attr("", { "cell", "code" }))
    end
    if b.t == "Div" and is_code_cell(b) and folded then
      b.attributes["source_hidden"] = "true"
    end
    out:insert(b)
  end
  return out
end

------------------------------------------------------------------------
-- handouts: the house style, with the course's title and palette
------------------------------------------------------------------------
local function typst_string(s)
  return '"' .. s:gsub("\\", "\\\\"):gsub('"', '\\"') .. '"'
end

local function palette()
  local colours = {}
  for name, value in read_file("slides", "palette.scss"):gmatch("%$course%-([%w%-]+):%s*(#%x+)%s*;") do
    colours[#colours + 1] = { name, value }
  end
  if #colours == 0 then error("course.lua: no $course-* colours in slides/palette.scss") end
  return colours
end

local function handout_style(doc)
  if FORMAT ~= "typst" then return nil end
  local meta = doc.meta
  local course = meta.course or {}
  local title = course.title and stringify(course.title) or ""
  local short = course["short-title"] and stringify(course["short-title"]) or title
  local fields = {
    "title: [" .. pandoc.write(pandoc.Pandoc({ pandoc.Plain(pandoc.Inlines(title)) }), "typst"):gsub("%s+$", "") .. "]",
    "short-title: [" .. pandoc.write(pandoc.Pandoc({ pandoc.Plain(pandoc.Inlines(short)) }), "typst"):gsub("%s+$", "") .. "]",
    "doc-title: [" .. (meta.title and pandoc.write(pandoc.Pandoc({ pandoc.Plain(meta.title) }), "typst"):gsub("%s+$", "") or "") .. "]",
  }
  for _, c in ipairs(palette()) do
    fields[#fields + 1] = c[1] .. ": rgb(" .. typst_string(c[2]) .. ")"
  end
  local preamble = "#let course = (\n  " .. table.concat(fields, ",\n  ") .. ",\n)\n"
  doc.blocks:insert(1, pandoc.RawBlock("typst", preamble .. read_file("slides", "handout.typ")))
  return doc
end

------------------------------------------------------------------------
-- links to a week's code page: a handout or a notebook names the function only
------------------------------------------------------------------------
-- A figure caption ends "Code: [`module.plot_x`](code.qmd#plot_x)." On the web the link
-- opens the week's highlighted experiments module; a PDF handout or a downloaded
-- notebook has no such page beside it, so there the function's name stands alone.
local function unlink_code_page(link)
  if (FORMAT == "typst" or FORMAT == "ipynb") and link.target:match("^code%.qmd") then
    return link.content
  end
  return nil
end

------------------------------------------------------------------------
-- links home and to the week's other materials
------------------------------------------------------------------------
local MATERIALS = {
  { "Course home", "../../index.html" }, { "Slides", "lecture.html" }, { "Slides (PDF)", "slides.pdf" },
  { "Notes (PDF)", "lecture.pdf" }, { "Lab", "lab.html" }, { "Notebook", "lab.ipynb" }, { "Code", "code.html" },
  { "Ledger", "../../ledger.html" },
}

local function material_links(sep)
  local inlines = pandoc.Inlines({})
  for i, m in ipairs(MATERIALS) do
    if i > 1 then inlines:extend(sep) end
    inlines:insert(pandoc.Link(m[1], m[2]))
  end
  return inlines
end

local function week_links(doc)
  if not doc.meta["week-links"] or not (FORMAT:match("^html") or is_reveal()) then return nil end
  if is_reveal() then
    local items = {}
    for _, m in ipairs(MATERIALS) do items[#items + 1] = { pandoc.Plain({ pandoc.Link(m[1], m[2]) }) } end
    doc.blocks:insert(pandoc.Header(1, "This week's materials",
      pandoc.Attr("week-materials", { "unnumbered", "week-links" })))
    doc.blocks:insert(pandoc.BulletList(items))
  else
    local bar = pandoc.Div({ pandoc.Plain(material_links({ pandoc.Space(), pandoc.Str("·"), pandoc.Space() })) },
      pandoc.Attr("", { "week-links" }, { role = "navigation" }))
    doc.blocks:insert(1, bar)
  end
  return doc
end

return {
  { RawBlock = drop_definitions, Blocks = drop_slide_only, Link = unlink_code_page },
  { Div = unwrap_callout },
  { Pandoc = handout_style },
  { Pandoc = week_links },
}
